//! Configuration layering as `herald serve` applies it.

use herald_server::config::Config;

#[test]
fn file_then_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("herald.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9000\"\n[limits]\nmax_group_members = 10\n").expect("write");
    let env = vec![("HERALD_LIMITS__MAX_GROUP_MEMBERS".to_owned(), "20".to_owned())];
    let config = Config::load(Some(&file), env).expect("loads");
    assert_eq!(config.server.listen.port(), 9000, "from the file");
    assert_eq!(config.limits.max_group_members, 20, "the environment wins over the file");
    assert_eq!(config.log.partitions, 16, "defaults fill the rest");

    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9000\"\ntypo = 1\n").expect("write");
    let err = Config::load(Some(&file), Vec::new()).expect_err("unknown key");
    assert!(err.to_string().contains("typo"), "{err}");
    let err = Config::load(Some(&dir.path().join("missing.toml")), Vec::new()).expect_err("missing file");
    assert!(err.to_string().contains("missing.toml"), "{err}");
}
