//! Where configuration overrides come from: the process environment in production, a map in
//! tests. Both planes read their `GATEHOUSE_*` settings through it.

use std::collections::HashMap;

pub trait Lookup {
    fn get(&self, key: &str) -> Option<String>;
}

/// The real environment.
pub struct Env;

impl Lookup for Env {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Lookup for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}
