//! The Admin API's route table: an axum router that also remembers the paths it was given,
//! because axum cannot list its routes and the OpenAPI document must be held to exactly what
//! is routed (see `openapi`'s test).

use axum::routing::MethodRouter;
use axum::Router;

use super::Admin;

#[derive(Default)]
pub struct Routes {
    router: Router<Admin>,
    paths: Vec<String>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn route(mut self, path: &str, methods: MethodRouter<Admin>) -> Self {
        self.paths.push(path.to_owned());
        self.router = self.router.route(path, methods);
        self
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.paths.extend(other.paths);
        self.router = self.router.merge(other.router);
        self
    }

    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    pub fn into_router(self) -> Router<Admin> {
        self.router
    }
}
