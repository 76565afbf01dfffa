#!/usr/bin/env bash
# Black-box test of the Admin API against its own OpenAPI document (GET /openapi.json):
# schemathesis (PyPI) sends generated valid and invalid requests to a real gatehouse-cp on a
# throwaway SQLite store and fails on any 5xx, an answer whose status, content type or body the
# document does not describe, or the process dying.
#
#   scripts/test-openapi.sh                      # binaries from target/debug (cargo build --bins)
#   GATEHOUSE_BIN_DIR=target/release scripts/test-openapi.sh
#   OPENAPI_MAX_EXAMPLES=200 scripts/test-openapi.sh   # a longer run (default 25 per operation)
#
# OPENAPI_VENV picks the virtualenv (default /tmp/gatehouse-openapi-venv), made if missing and
# brought to deploy/test/openapi-requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${OPENAPI_VENV:-/tmp/gatehouse-openapi-venv}"
requirements=deploy/test/openapi-requirements.txt
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
stamp="$venv/.gatehouse-requirements"
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

bin="${GATEHOUSE_BIN_DIR:-${CARGO_TARGET_DIR:-target}/debug}/gatehouse-cp"
work="$(mktemp -d)"
port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() {
  [ -n "${cp_pid:-}" ] && kill "$cp_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export GATEHOUSE_ADMIN_LISTEN="127.0.0.1:$port" GATEHOUSE_ADMIN_SSL_LISTEN=off GATEHOUSE_CLUSTER_LISTEN=off
export GATEHOUSE_DATABASE_URL="sqlite://$work/gatehouse.db" GATEHOUSE_PREFIX="$work/prefix"
"$bin" migrations up >/dev/null
"$bin" run >"$work/cp.log" 2>&1 &
cp_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/status" >/dev/null 2>&1 && break
  sleep 0.1
done

# Entities named as the document's path-parameter examples, so that generated requests on
# /services/{svc}, /consumers/{consumer}/key-auth/{credential} and the rest find something.
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=example.test -days 2 \
  -keyout "$work/example.key" -out "$work/example.crt" 2>/dev/null
"$venv/bin/python" - "http://127.0.0.1:$port" "$work" <<'PY'
import json, sys, urllib.error, urllib.request
base, work = sys.argv[1], sys.argv[2]
doc = json.load(urllib.request.urlopen(base + "/openapi.json"))
example_id = doc["paths"]["/routes/{route}"]["parameters"][0]["example"]
def call(method, path, body):
    req = urllib.request.Request(base + path, json.dumps(body).encode(), method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        sys.exit(f"seeding {method} {path} failed: {e.code} {e.read().decode()}")
svc = call("POST", "/services", {"name": "example-service", "url": "http://127.0.0.1:9/"})
call("PUT", f"/routes/{example_id}", {"paths": ["/example"], "service": {"id": svc["id"]}})
alice = call("POST", "/consumers", {"username": "alice"})
for kind, body in [("key-auth", {"key": "alice-key"}), ("basic-auth", {"username": "alice", "password": "pw"}),
                   ("hmac-auth", {"username": "alice-hmac"}), ("jwt", {}), ("acls", {"group": "admins"}),
                   ("oauth2", {"name": "app", "redirect_uri": ["http://example.test/cb"]})]:
    call("POST", f"/consumers/alice/{kind}", dict(body, id=example_id))
call("POST", "/oauth2_tokens", {"id": example_id, "credential_id": example_id, "expires_in": 3600})
call("POST", "/plugins", {"id": example_id, "name": "rate-limiting", "consumer_id": alice["id"],
                         "config": {"minute": 100}})
call("POST", "/certificates", {"cert": open(f"{work}/example.crt").read(), "key": open(f"{work}/example.key").read(),
                               "snis": ["example.test"]})
call("POST", "/upstreams", {"name": "example-upstream",
                            "healthchecks": {"passive": {"unhealthy": {"http_failures": 1}}}})
call("POST", "/upstreams/example-upstream/targets", {"target": "127.0.0.1:8080"})
PY

status=0
"$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "${OPENAPI_MAX_EXAMPLES:-25}" \
  --seed "${OPENAPI_SEED:-1}" \
  --workers 1 \
  --request-timeout 10 \
  --suppress-health-check all \
  || status=$?

if ! kill -0 "$cp_pid" 2>/dev/null; then
  echo "gatehouse-cp died during the run; its log:" >&2
  cat "$work/cp.log" >&2
  exit 1
fi
if grep -q "panicked" "$work/cp.log"; then
  echo "gatehouse-cp panicked during the run; its log:" >&2
  cat "$work/cp.log" >&2
  exit 1
fi
exit "$status"
