//! Probes, metrics, configuration at start-up.

use super::helpers::*;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    let (a, b) = (app.register("a").await, app.register("b").await);
    let c = app.direct(&a, &b).await;
    app.send(&a, c, "m", "x").await;
    assert_eq!(app.call(Method::GET, "/healthz", None, None).await.0, StatusCode::OK);
    assert_eq!(app.call(Method::GET, "/readyz", None, None).await.0, StatusCode::OK);
    let metrics =
        app.http.get(format!("{}/metrics", app.base)).send().await.expect("metrics").text().await.expect("text");
    for name in [
        "message_processing_duration_ms_bucket",
        "database_query_duration_ms_bucket{query_type=\"commit_with_feed\",table=\"messages\"",
        "http_requests_total",
        "cache_hit_rate{cache_layer=\"l1\"",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    // No user or conversation id is ever a label.
    assert!(!metrics.contains(&c.to_string()) && !metrics.contains(&a.id().to_string()));
}

#[test]
fn example_config_is_in_sync() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../herald.example.toml");
    let text = std::fs::read_to_string(path).expect("herald.example.toml");
    let parsed: herald_server::config::Config = toml::from_str(&text).expect("example parses with no unknown keys");
    assert_eq!(parsed, herald_server::config::Config::default(), "example values are the defaults");
    // Every field, including optional ones that serialise to nothing, is documented in the example.
    let mut all = herald_server::config::Config::default();
    all.auth.jwt_secret = Some("x".repeat(32));
    let defaults: toml::Table = toml::from_str(&toml::to_string(&all).expect("serialise")).expect("table");
    fn documented(text: &str, path: &str, table: &toml::Table) {
        assert!(text.contains(&format!("[{path}]")), "section [{path}] missing from the example");
        for (field, value) in table {
            match value.as_table() {
                // A nested table ([media.storage], [storage.postgres.pool]): its own header and fields.
                Some(nested) => documented(text, &format!("{path}.{field}"), nested),
                None => assert!(text.contains(&format!("{field} =")), "{path}.{field} missing from the example"),
            }
        }
    }
    for (section, fields) in defaults {
        documented(&text, &section, fields.as_table().expect("section table"));
    }
}

#[test]
fn a_bad_setting_stops_start_up_with_a_message_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = |env: (&str, &str), config: Option<&std::path::Path>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path()).env(env.0, env.1);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
    };
    let out = serve(("HERALD_LOG__PARTITIONS", "0"), None).output().expect("run herald");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("log.partitions"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A typo in the file is the operator's and stops the start.
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[server]\nno_such_thing = 1\n").expect("config");
    let out = serve(("RUST_LOG", "warn"), Some(&file)).output().expect("run herald");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_thing"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.path().join("herald.redb").exists(), "nothing opened before validation");

    // The environment is shared with other tools: a HERALD_ variable that names no setting is skipped with a
    // warning, and the node starts.
    let mut child = serve(("HERALD_RELEASE", "2026.12"), None)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let stdout = child.stdout.take().expect("stdout");
    let mut before_listening = Vec::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.expect("read stdout");
        if line.contains("herald listening on") {
            break;
        }
        before_listening.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        before_listening.iter().any(|l| l.contains("HERALD_RELEASE") && l.contains("names no Herald setting")),
        "{before_listening:?}"
    );
}

/// The OpenAPI document is served to anyone, and describes this server's own API: a path it lists answers (here
/// `GET /api/v1/me`) with the schema it names.
#[tokio::test]
async fn serves_its_openapi_document() {
    let app = spawn_app().await;
    let (status, doc) = app.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    let me = &doc["paths"]["/api/v1/me"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(me, "#/components/schemas/Me");
    let required = doc["components"]["schemas"]["Me"]["required"].as_array().expect("Me's required fields").clone();
    let user = app.register("reader").await;
    let (_, body) = app.get("/api/v1/me", user.token()).await;
    for field in required {
        let field = field.as_str().expect("a name");
        assert!(body.get(field).is_some(), "GET /api/v1/me lacks {field}: {body}");
    }
}
