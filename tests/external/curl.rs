//! curl as the client: `--etag-save` keeps the tag of a response in a file
//! and `--etag-compare` sends it back as `If-None-Match`. Ignored, with the
//! reason, where curl is missing (see `harness`).

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use axum::{extract::State, routing, Router};
use tower_etag::ETagLayer;

use crate::{
    common::*,
    harness::{add, Suite, CURL},
};

/// The tests of this module, for the harness.
pub(crate) fn add_to(suite: &mut Suite) {
    add!(suite, Some(&CURL), async [curl_etag_save_and_compare_round_trip]);
}

/// Runs curl with `args`, returning the status code it reports and the body.
async fn curl(args: Vec<String>) -> (String, String) {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(CURL.path())
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args(["--write-out", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (body, code) = stdout.rsplit_once('\n').unwrap();
    (code.to_owned(), body.to_owned())
}

/// A page whose content is its version number, which the test can bump.
async fn start(version: Arc<AtomicUsize>) -> SocketAddr {
    let app = Router::new()
        .route(
            "/",
            routing::get(|State(version): State<Arc<AtomicUsize>>| async move {
                format!("version {}\n", version.load(Ordering::SeqCst))
            }),
        )
        .with_state(version)
        .layer(ETagLayer::new());
    serve_axum(app).await
}

fn etag_in(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap().trim().to_owned()
}

async fn curl_etag_save_and_compare_round_trip() {
    let version = Arc::new(AtomicUsize::new(1));
    let addr = start(version.clone()).await;
    let url = format!("http://{addr}/");
    let dir = std::env::temp_dir().join(format!("tower-etag-curl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("etag.txt");
    let path = file.to_str().unwrap().to_owned();
    let arg = |s: &str| s.to_owned();

    // First fetch: a 200, and curl keeps its tag.
    let (code, body) = curl(vec![arg("--etag-save"), path.clone(), url.clone()]).await;
    assert_eq!((code.as_str(), body.as_str()), ("200", "version 1\n"));
    assert_eq!(etag_in(&file), expected_tag(b"version 1\n"));

    // Revalidation with the saved tag: 304, no body.
    let (code, body) = curl(vec![arg("--etag-compare"), path.clone(), url.clone()]).await;
    assert_eq!((code.as_str(), body.as_str()), ("304", ""));

    // The content changes: the saved tag no longer matches, curl gets the
    // new content and saves its tag.
    version.store(2, Ordering::SeqCst);
    let (code, body) = curl(vec![
        arg("--etag-compare"),
        path.clone(),
        arg("--etag-save"),
        path.clone(),
        url.clone(),
    ])
    .await;
    assert_eq!((code.as_str(), body.as_str()), ("200", "version 2\n"));
    assert_eq!(etag_in(&file), expected_tag(b"version 2\n"));

    // And that tag revalidates in turn, HEAD included (`--head`).
    let (code, _) = curl(vec![arg("--etag-compare"), path.clone(), url.clone()]).await;
    assert_eq!(code, "304");
    let (code, head) = curl(vec![arg("--head"), url]).await;
    assert_eq!(code, "200");
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains(&format!("etag: {}", expected_tag(b"version 2\n"))),
        "{head}"
    );
    assert!(head.contains("content-length: 10"), "{head}");

    std::fs::remove_dir_all(dir).unwrap();
}
