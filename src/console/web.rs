//! The built-in web console (issue #15): static pages served by the HTTP listener at `/`, built
//! on the JSON API under `/api/v1/` (`docs/console.md`).
//!
//! The assets are plain ES modules and CSS under `src/console/web/`, compiled into the binary
//! with `include_str!`: no CDN, no external fonts, no build step. One module per page
//! (`web/pages/*.js`); `app.js` routes (`#/topics/...`), polls the API and reports its errors.
//!
//! Invariant: every file under `web/` is in [`ASSETS`] (a unit test checks the directory), so
//! a new page cannot be forgotten by the binary.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// (path under `web/`, content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", HTML, include_str!("web/index.html")),
    ("style.css", CSS, include_str!("web/style.css")),
    ("app.js", JS, include_str!("web/app.js")),
    ("api.js", JS, include_str!("web/api.js")),
    ("ui.js", JS, include_str!("web/ui.js")),
    ("pages/cluster.js", JS, include_str!("web/pages/cluster.js")),
    ("pages/topics.js", JS, include_str!("web/pages/topics.js")),
    ("pages/topic.js", JS, include_str!("web/pages/topic.js")),
    ("pages/messages.js", JS, include_str!("web/pages/messages.js")),
    ("pages/groups.js", JS, include_str!("web/pages/groups.js")),
    ("pages/group.js", JS, include_str!("web/pages/group.js")),
    ("pages/security.js", JS, include_str!("web/pages/security.js")),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Same-origin only: proves at run time that nothing is loaded from elsewhere, and keeps a
/// message value shown in the browser from ever running as script.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// `/` and `/console/<asset>`; merged into the HTTP listener's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/console/{*path}", get(asset))
}

async fn index() -> Response {
    serve("index.html")
}

async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}

fn serve(path: &str) -> Response {
    let Some((_, content_type, body)) = ASSETS.iter().find(|(p, _, _)| *p == path) else {
        return (StatusCode::NOT_FOUND, "no such console asset\n").into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Assets change with the binary; revalidating is cheap on loopback and never serves a page
    // of the previous version against the new API.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_under(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read assets dir") {
            let entry = entry.expect("dir entry");
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.file_type().expect("file type").is_dir() {
                files_under(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }

    #[test]
    fn every_asset_file_is_compiled_in() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/console/web");
        let mut on_disk = Vec::new();
        files_under(&dir, "", &mut on_disk);
        on_disk.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|(p, _, _)| p.to_string()).collect();
        served.sort();
        assert_eq!(on_disk, served, "src/console/web and console::ASSETS differ");
    }

    #[test]
    fn every_module_import_resolves_to_an_asset() {
        // `import ... from "./x.js"` / `"../ui.js"` / `import("./pages/x.js")` in each module.
        for (path, _, body) in ASSETS.iter().filter(|(p, _, _)| p.ends_with(".js")) {
            let base = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            for spec in body.split('"').skip(1).step_by(2).filter(|s| s.ends_with(".js")) {
                let mut parts: Vec<&str> = if base.is_empty() { vec![] } else { base.split('/').collect() };
                for seg in spec.split('/') {
                    match seg {
                        "." => {}
                        ".." => {
                            parts.pop();
                        }
                        s => parts.push(s),
                    }
                }
                let target = parts.join("/");
                assert!(ASSETS.iter().any(|(p, _, _)| *p == target), "{path} imports {spec}: no asset {target}");
            }
        }
    }

    #[test]
    fn index_references_only_served_assets() {
        let index = ASSETS[0].2;
        for reference in index.split('"').filter(|s| s.starts_with("/console/")) {
            let path = &reference["/console/".len()..];
            assert!(ASSETS.iter().any(|(p, _, _)| *p == path), "index.html references {reference}");
        }
    }
}
