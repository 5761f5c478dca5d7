//! A config file and the `HERALD_*` environment, as `herald serve` reads them at start-up: the file's text, a NUL,
//! then `NAME=value` lines. Whatever they hold, loading answers with a config or an error naming what is wrong,
//! and a config that validates can be turned into every part's settings without a panic.
#![no_main]
use herald_server::config::Config;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (file, env) = text.split_once('\0').unwrap_or((text, ""));
    let env = env.lines().filter_map(|line| line.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned()));
    let Ok(config) = Config::from_toml(file, env) else { return };
    if config.validate().is_err() {
        return;
    }
    let _ = config.gateway();
    let _ = config.hub();
    let _ = config.login_limits();
    let _ = config.core_limits();
    let _ = config.storage.postgres_settings();
    let _ = config.cluster.kafka.settings(config.log.partitions, config.log.max_batch, "fuzz");
    let _ = config.media.options(Path::new("/nonexistent"));
});
