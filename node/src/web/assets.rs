//! The app's files, built into the binary: nothing is fetched from
//! anywhere at run time.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A file: its content type and bytes.
pub(super) struct Asset(&'static str, &'static str);

pub(super) const INDEX_HTML: Asset = Asset(
    "text/html; charset=utf-8",
    include_str!("../../web/index.html"),
);
pub(super) const APP_JS: Asset = Asset(
    "text/javascript; charset=utf-8",
    include_str!("../../web/app.js"),
);
pub(super) const STYLE_CSS: Asset = Asset(
    "text/css; charset=utf-8",
    include_str!("../../web/style.css"),
);
pub(super) const ICON_SVG: Asset = Asset("image/svg+xml", include_str!("../../web/icon.svg"));
/// The map library, Leaflet, as npm installed it (node/build.rs).
pub(super) const LEAFLET_JS: Asset = Asset(
    "text/javascript; charset=utf-8",
    include_str!(concat!(
        env!("OUT_DIR"),
        "/web-npm/node_modules/leaflet/dist/leaflet.js"
    )),
);
pub(super) const LEAFLET_CSS: Asset = Asset(
    "text/css; charset=utf-8",
    include_str!(concat!(
        env!("OUT_DIR"),
        "/web-npm/node_modules/leaflet/dist/leaflet.css"
    )),
);
/// The reader of offline tile files, PMTiles, as npm installed it.
pub(super) const PMTILES_JS: Asset = Asset(
    "text/javascript; charset=utf-8",
    include_str!(concat!(
        env!("OUT_DIR"),
        "/web-npm/node_modules/pmtiles/dist/pmtiles.js"
    )),
);
const PAIR_HTML: &str = include_str!("../../web/pair.html");

/// The file served at `path`, if any.
pub(super) fn by_path(path: &str) -> Option<Asset> {
    Some(match path {
        "/app.js" => APP_JS,
        "/style.css" => STYLE_CSS,
        "/icon.svg" | "/favicon.ico" => ICON_SVG,
        "/lib/leaflet.js" => LEAFLET_JS,
        "/lib/leaflet.css" => LEAFLET_CSS,
        "/lib/pmtiles.js" => PMTILES_JS,
        _ => return None,
    })
}

pub(super) fn serve(asset: Asset) -> Response {
    (
        [
            (header::CONTENT_TYPE, asset.0),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.1,
    )
        .into_response()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The pairing page, with what went wrong if anything did.
pub(super) fn pair_page(status: StatusCode, problem: Option<&str>) -> Response {
    let problem = problem.map_or_else(String::new, |p| {
        format!("<p class=\"problem\" role=\"alert\">{}</p>", escape(p))
    });
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PAIR_HTML.replace("<!--problem-->", &problem),
    )
        .into_response()
}
