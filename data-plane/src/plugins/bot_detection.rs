//! bot-detection (kong-0.14-plugins §5.1): refuses requests whose User-Agent a configured
//! blacklist or the built-in bot rules match, unless a whitelist rule matches first. Every
//! rule is compiled when the configuration compiles, never on the request path.

use std::sync::LazyLock;

use serde_json::Value;

use super::{Access, BuildError, Plugin, Reply, RequestCtx};

/// The bot rules Kong 0.14.1 ships (kong/plugins/bot-detection/rules.lua), which are the
/// "bots" section of ua-parser's uap-core `regexes.yaml`: data, searched unanchored.
const BOT_RULES: &[&str] = &[
    r"(Pingdom.com_bot_version_)(\d+)\.(\d+)",
    r"(facebookexternalhit)/(\d+)\.(\d+)",
    r"Google.*/\+/web/snippet",
    r"(Twitterbot)/(\d+)\.(\d+)",
    r"/((?:Ant-)?Nutch|[A-z]+[Bb]ot|[A-z]+[Ss]pider|Axtaris|fetchurl|Isara|ShopSalad|Tailsweep)[ \-](\d+)(?:\.(\d+)(?:\.(\d+))?)?",
    r"(008|Altresium|Argus|BaiduMobaider|BoardReader|DNSGroup|DataparkSearch|EDI|Goodzer|Grub|INGRID|Infohelfer|LinkedInBot|LOOQ|Nutch|PathDefender|Peew|PostPost|Steeler|Twitterbot|VSE|WebCrunch|WebZIP|Y!J-BR[A-Z]|YahooSeeker|envolk|sproose|wminer)/(\d+)(?:\.(\d+)(?:\.(\d+))?)?",
    r"(MSIE) (\d+)\.(\d+)([a-z]\d?)?;.* MSIECrawler",
    r"(Google-HTTP-Java-Client|Apache-HttpClient|http%20client|Python-urllib|HttpMonitor|TLSProber|WinHTTP|JNLP)(?:[ /](\d+)(?:\.(\d+)(?:\.(\d+))?)?)?",
    r"(1470\.net crawler|50\.nu|8bo Crawler Bot|Aboundex|Accoona-[A-z]+-Agent|AdsBot-Google(?:-[a-z]+)?|altavista|AppEngine-Google|archive.*?\.org_bot|archiver|Ask Jeeves|[Bb]ai[Dd]u[Ss]pider(?:-[A-Za-z]+)*|bingbot|BingPreview|blitzbot|BlogBridge|BoardReader(?: [A-Za-z]+)*|boitho.com-dc|BotSeer|\b\w*favicon\w*\b|\bYeti(?:-[a-z]+)?|Catchpoint bot|[Cc]harlotte|Checklinks|clumboot|Comodo HTTP\(S\) Crawler|Comodo-Webinspector-Crawler|ConveraCrawler|CRAWL-E|CrawlConvera|Daumoa(?:-feedfetcher)?|Feed Seeker Bot|findlinks|Flamingo_SearchEngine|FollowSite Bot|furlbot|Genieo|gigabot|GomezAgent|gonzo1|(?:[a-zA-Z]+-)?Googlebot(?:-[a-zA-Z]+)?|Google SketchUp|grub-client|gsa-crawler|heritrix|HiddenMarket|holmes|HooWWWer|htdig|ia_archiver|ICC-Crawler|Icarus6j|ichiro(?:/mobile)?|IconSurf|IlTrovatore(?:-Setaccio)?|InfuzApp|Innovazion Crawler|InternetArchive|IP2[a-z]+Bot|jbot\b|KaloogaBot|Kraken|Kurzor|larbin|LEIA|LesnikBot|Linguee Bot|LinkAider|LinkedInBot|Lite Bot|Llaut|lycos|Mail\.RU_Bot|masidani_bot|Mediapartners-Google|Microsoft .*? Bot|mogimogi|mozDex|MJ12bot|msnbot(?:-media *)?|msrbot|netresearch|Netvibes|NewsGator[^/]*|^NING|Nutch[^/]*|Nymesis|ObjectsSearch|Orbiter|OOZBOT|PagePeeker|PagesInventory|PaxleFramework|Peeplo Screenshot Bot|PlantyNet_WebRobot|Pompos|Read%20Later|Reaper|RedCarpet|Retreiver|Riddler|Rival IQ|scooter|Scrapy|Scrubby|searchsight|seekbot|semanticdiscovery|Simpy|SimplePie|SEOstats|SimpleRSS|SiteCon|Slurp|snappy|Speedy Spider|Squrl Java|TheUsefulbot|ThumbShotsBot|Thumbshots\.ru|TwitterBot|URL2PNG|Vagabondo|VoilaBot|^vortex|Votay bot|^voyager|WASALive.Bot|Web-sniffer|WebThumb|WeSEE:[A-z]+|WhatWeb|WIRE|WordPress|Wotbox|www\.almaden\.ibm\.com|Xenu(?:.s)? Link Sleuth|Xerka [A-z]+Bot|yacy(?:bot)?|Yahoo[a-z]*Seeker|Yahoo! Slurp|Yandex\w+|YodaoBot(?:-[A-z]+)?|YottaaMonitor|Yowedo|^Zao|^Zao-Crawler|ZeBot_www\.ze\.bz|ZooShot|ZyBorg)(?:[ /]v?(\d+)(?:\.(\d+)(?:\.(\d+))?)?)?",
    r"(?:\/[A-Za-z0-9\.]+)? *([A-Za-z0-9 \-_\!\[\]:]*(?:[Aa]rchiver|[Ii]ndexer|[Ss]craper|[Bb]ot|[Ss]pider|[Cc]rawl[a-z]*))/(\d+)(?:\.(\d+)(?:\.(\d+))?)?",
    r"(?:\/[A-Za-z0-9\.]+)? *([A-Za-z0-9 _\!\[\]:]*(?:[Aa]rchiver|[Ii]ndexer|[Ss]craper|[Bb]ot|[Ss]pider|[Cc]rawl[a-z]*)) (\d+)(?:\.(\d+)(?:\.(\d+))?)?",
    r"((?:[A-z0-9]+|[A-z\-]+ ?)?(?: the )?(?:[Ss][Pp][Ii][Dd][Ee][Rr]|[Ss]crape|[A-Za-z0-9-]*(?:[^C][^Uu])[Bb]ot|[Cc][Rr][Aa][Ww][Ll])[A-z0-9]*)(?:(?:[ /]| v)(\d+)(?:\.(\d+)(?:\.(\d+))?)?)?",
];

/// The built-in rules as one set: a User-Agent is searched once, not once per rule.
static BOTS: LazyLock<Option<regex::RegexSet>> = LazyLock::new(|| match regex::RegexSet::new(BOT_RULES) {
    Ok(set) => Some(set),
    Err(e) => {
        tracing::error!(error = %e, "bot-detection: the built-in rules do not compile");
        None
    }
});

/// One configured rule: the `regex` crate when it can take the pattern, else `fancy-regex`
/// (PCRE's look-arounds and back-references), as routes' regex paths are compiled.
enum Rule {
    Plain(regex::Regex),
    Fancy(fancy_regex::Regex),
}

impl Rule {
    fn new(pattern: &str) -> Result<Rule, BuildError> {
        if let Ok(re) = regex::Regex::new(pattern) {
            return Ok(Rule::Plain(re));
        }
        fancy_regex::Regex::new(pattern)
            .map(Rule::Fancy)
            .map_err(|e| BuildError(format!("value '{pattern}' is not a valid regex: {e}")))
    }

    fn found_in(&self, text: &str) -> bool {
        match self {
            Rule::Plain(re) => re.is_match(text),
            // A search that exhausts its backtracking budget counts as no match.
            Rule::Fancy(re) => re.is_match(text).unwrap_or(false),
        }
    }
}

pub struct BotDetection {
    whitelist: Vec<Rule>,
    blacklist: Vec<Rule>,
}

impl BotDetection {
    pub fn new(config: &Value) -> Result<BotDetection, BuildError> {
        let rules = |k: &str| -> Result<Vec<Rule>, BuildError> {
            let items = config.get(k).and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
            items.iter().filter_map(Value::as_str).map(Rule::new).collect()
        };
        Ok(BotDetection { whitelist: rules("whitelist")?, blacklist: rules("blacklist")? })
    }

    /// Whether the (trimmed) User-Agent is refused: a whitelist match allows it, then a
    /// blacklist or built-in match refuses it.
    fn refuses(&self, agent: &str) -> bool {
        let agent = agent.trim();
        if self.whitelist.iter().any(|r| r.found_in(agent)) {
            return false;
        }
        self.blacklist.iter().any(|r| r.found_in(agent)) || BOTS.as_ref().is_some_and(|set| set.is_match(agent))
    }
}

impl Plugin for BotDetection {
    fn name(&self) -> &'static str {
        "bot-detection"
    }

    fn access_only(&self) -> bool {
        true
    }

    fn access<'a>(&'a self, ctx: &'a mut RequestCtx<'_>) -> Access<'a> {
        let mut agents = ctx.headers.get_all(http::header::USER_AGENT).iter();
        let Some(agent) = agents.next() else { return Access::Continue };
        if agents.next().is_some() {
            return Access::Respond(Reply::message(400, "Only one User-Agent header allowed").build());
        }
        if self.refuses(&String::from_utf8_lossy(agent.as_bytes())) {
            // Kong's responses helper sends a 403 with no text as an empty body.
            return Access::Respond(Reply::empty(403).build());
        }
        Access::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn built_in_rules_compile_and_match_bots_only() {
        assert!(BOTS.is_some(), "every built-in rule compiles");
        let plain = BotDetection::new(&json!({})).unwrap();
        for bot in [
            "Googlebot/2.1 (+http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "facebookexternalhit/1.1",
            "Twitterbot/1.0",
            "Apache-HttpClient/4.5.2 (Java/1.8.0_151)",
            "python-requests-bot/2.0",
        ] {
            assert!(plain.refuses(bot), "{bot}");
        }
        for person in [
            "curl/7.64.1",
            "Wget/1.20.3 (linux-gnu)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
        ] {
            assert!(!plain.refuses(person), "{person}");
        }
    }

    #[test]
    fn whitelist_beats_blacklist_and_built_ins() {
        let b = BotDetection::new(&json!({"whitelist": ["Twitterbot"], "blacklist": ["^curl/"]})).unwrap();
        assert!(!b.refuses("Twitterbot/1.0"));
        assert!(b.refuses("curl/7.64.1"));
        assert!(b.refuses("  curl/7.64.1  "), "the agent is trimmed");
        let look = BotDetection::new(&json!({"blacklist": ["^(?!Mozilla)"]})).unwrap();
        assert!(look.refuses("Lynx/2.8"));
        assert!(!look.refuses("Mozilla/5.0"));
    }
}
