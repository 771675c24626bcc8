//! haproxy: render, check (`haproxy -c`), swap atomically, reload in master-worker mode.
// TEMPORARY stub until the haproxy module lands (replaced on merge).
use std::path::PathBuf;

use super::{Applied, LbError, Plan};

#[derive(Debug)]
pub struct Settings;

impl Settings {
    pub fn new(_dir: PathBuf) -> Settings {
        Settings
    }
}

#[derive(Debug)]
pub struct Haproxy;

impl Haproxy {
    pub fn find_binary() -> Option<PathBuf> {
        None
    }
    pub async fn start(_binary: PathBuf, _settings: Settings) -> Result<Haproxy, LbError> {
        Ok(Haproxy)
    }
    pub async fn apply(&mut self, _plan: &Plan) -> Result<Applied, LbError> {
        Err(LbError::Rejected("stub".into()))
    }
    pub async fn stop(self) {}
}
