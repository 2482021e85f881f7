//! The pages, rendered on the server. Every name, tag, label and annotation goes through
//! [`esc`] (a manifest's annotations are whatever its pusher wrote); links are built from
//! names the registry accepted and query values [`query_escape`]d.
//!
//! ```
//! use donjon_browse::html::esc;
//!
//! assert_eq!(esc(r#"<script>alert("x")</script>"#), "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;");
//! ```

use std::borrow::Cow;
use std::fmt::Write;
use std::time::SystemTime;

use http::StatusCode;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// Text made safe for HTML, in an element or a quoted attribute.
pub fn esc(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// What a query value keeps unencoded.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'/');

/// A value for a URL's query.
pub fn query_escape(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

/// A size in B, KiB, MiB, GiB, one decimal above bytes.
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// What surrounds every page: whether there is a login, and whether the caller used it.
pub(crate) struct Chrome {
    pub(crate) login: bool,
    pub(crate) signed_in: bool,
}

/// A page's title and main content, before the surrounding layout.
pub struct Page {
    title: String,
    crumbs: Vec<(String, Option<String>)>,
    main: String,
}

impl Page {
    fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            crumbs: vec![("Repositories".into(), Some("/ui/".into()))],
            main: String::new(),
        }
    }

    fn crumb(mut self, text: &str, href: Option<String>) -> Self {
        self.crumbs.push((text.to_string(), href));
        self
    }

    /// The whole document.
    pub(crate) fn finish(self, chrome: &Chrome) -> String {
        let mut s = String::with_capacity(self.main.len() + 1024);
        let _ = write!(
            s,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"color-scheme\" content=\"light dark\">\
             <title>{} · donjon</title><link rel=\"stylesheet\" href=\"/ui/assets/ui.css\">\
             <script src=\"/ui/assets/ui.js\" defer></script></head><body>\
             <header><a class=\"brand\" href=\"/ui/\">donjon</a><nav>",
            esc(&self.title)
        );
        for (i, (text, href)) in self.crumbs.iter().enumerate() {
            if i > 0 {
                s.push_str("<span class=\"sep\">/</span>");
            }
            match href {
                Some(h) => {
                    let _ = write!(s, "<a href=\"{}\">{}</a>", esc(h), esc(text));
                }
                None => {
                    let _ = write!(s, "<span>{}</span>", esc(text));
                }
            }
        }
        s.push_str("</nav>");
        if chrome.signed_in {
            s.push_str(
                "<form class=\"session\" method=\"post\" action=\"/ui/logout\"><button type=\"submit\">Sign out</button></form>",
            );
        } else if chrome.login {
            s.push_str("<a class=\"session\" href=\"/ui/login\">Sign in</a>");
        }
        s.push_str("</header><main>");
        s.push_str(&self.main);
        s.push_str("</main></body></html>\n");
        s
    }
}

/// The login form.
pub(crate) fn login(next: &str, message: &str) -> Page {
    let mut p = Page::new("Sign in");
    p.crumbs.clear();
    let _ = write!(
        p.main,
        "<h1>Sign in</h1>{}<form class=\"login\" method=\"post\" action=\"/ui/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>User <input name=\"username\" autocomplete=\"username\" required autofocus></label>\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\">The registry's own users: what you may pull is what you will see.</p>",
        if message.is_empty() { String::new() } else { format!("<p class=\"notice\">{}</p>", esc(message)) },
        esc(next)
    );
    p
}

/// An error page.
pub(crate) fn error(status: StatusCode, message: &str) -> Page {
    let mut p = Page::new(status.canonical_reason().unwrap_or("Error"));
    let _ = write!(
        p.main,
        "<h1>{} {}</h1><p class=\"notice\">{}</p>",
        status.as_u16(),
        esc(status.canonical_reason().unwrap_or("")),
        esc(message)
    );
    p
}

/// A repository on the catalog page.
pub(crate) struct RepoRow {
    pub(crate) name: String,
    pub(crate) upstream: Option<String>,
}

fn badge(upstream: Option<&str>) -> String {
    upstream
        .map(|u| format!(" <span class=\"badge\" title=\"pull-through cache\">cached from {}</span>", esc(u)))
        .unwrap_or_default()
}

pub(crate) fn catalog(
    filter: &str,
    paged: bool,
    rows: &[RepoRow],
    next: Option<&str>,
    looking: bool,
) -> Page {
    let mut p = Page::new("Repositories");
    p.crumbs[0].1 = None;
    let _ = write!(
        p.main,
        "<h1>Repositories</h1><form class=\"filter\" method=\"get\" action=\"/ui/\" role=\"search\">\
         <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"Filter by name\" aria-label=\"Filter by name\">\
         <button type=\"submit\">Filter</button></form>",
        esc(filter)
    );
    if rows.is_empty() {
        let what = if filter.is_empty() {
            "No repositories".to_string()
        } else {
            format!("No repository name holds “{}”", esc(filter))
        };
        let _ = write!(
            p.main,
            "<p class=\"empty\">{what}{}.</p>",
            if next.is_some() { " yet (keep looking below)" } else { "" }
        );
    } else {
        p.main.push_str("<ul class=\"repos\" id=\"repos\">");
        for r in rows {
            let _ = write!(
                p.main,
                "<li><a href=\"/ui/r/{n}\">{n}</a>{}</li>",
                badge(r.upstream.as_deref()),
                n = esc(&r.name)
            );
        }
        p.main.push_str("</ul>");
    }
    p.main.push_str("<nav class=\"pager\">");
    if paged {
        let _ = write!(
            p.main,
            "<a href=\"/ui/{}\">First page</a>",
            if filter.is_empty() { String::new() } else { format!("?q={}", query_escape(filter)) }
        );
    }
    if let Some(last) = next {
        let mut href = format!("/ui/?last={}", query_escape(last));
        if !filter.is_empty() {
            let _ = write!(href, "&q={}", query_escape(filter));
        }
        // A filter that matched little before the page's budget ran out: the rest is further on.
        let label = if looking { "Keep looking" } else { "Next page" };
        let _ = write!(p.main, "<a rel=\"next\" href=\"{}\">{label}</a>", esc(&href));
    }
    p.main.push_str("</nav>");
    p
}

/// A slice of a longer list.
pub(crate) struct Paging {
    pub(crate) from: usize,
    pub(crate) page: usize,
    pub(crate) total: usize,
}

fn ago(t: SystemTime) -> (String, String) {
    let stamp = donjon_core::time::rfc3339(t);
    let secs = SystemTime::now().duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    let rel = match secs {
        0..=59 => "just now".to_string(),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    };
    (stamp, rel)
}

pub(crate) fn repository(
    name: &str,
    upstream: Option<&str>,
    tags: &[(String, Option<SystemTime>)],
    paging: Paging,
    by_time: bool,
    times: bool,
    host: &str,
    plain_http: bool,
) -> Page {
    let mut p = Page::new(name).crumb(name, None);
    let _ = write!(p.main, "<h1>{}{}</h1>", esc(name), badge(upstream));
    // A tag that exists: `latest` when there is one, else the first shown (none, no command).
    let tag = tags
        .iter()
        .map(|(t, _)| t.as_str())
        .find(|t| *t == "latest")
        .or(tags.first().map(|(t, _)| t.as_str()));
    if let Some(tag) = tag {
        pull_commands(&mut p.main, &format!("{host}/{name}:{tag}"), plain_http);
    }
    let _ = write!(p.main, "<h2>Tags <span class=\"count\">{}</span></h2>", paging.total);
    if times {
        let link = |label: &str, key: &str, on: bool| {
            if on {
                format!("<strong>{label}</strong>")
            } else {
                format!("<a href=\"/ui/r/{}?sort={key}\">{label}</a>", esc(name))
            }
        };
        let _ = write!(
            p.main,
            "<p class=\"sort\">Sort by {} · {}</p>",
            link("name", "name", !by_time),
            link("push time", "time", by_time)
        );
    }
    if tags.is_empty() {
        p.main.push_str("<p class=\"empty\">No tags.</p>");
    } else {
        p.main.push_str("<table class=\"tags\" id=\"tags\"><thead><tr><th>Tag</th>");
        if times {
            p.main.push_str("<th>Pushed</th>");
        }
        p.main.push_str("</tr></thead><tbody>");
        for (tag, at) in tags {
            let _ = write!(p.main, "<tr><td><a href=\"/ui/r/{}:{t}\">{t}</a></td>", esc(name), t = esc(tag));
            if times {
                match at.map(ago) {
                    Some((stamp, rel)) => {
                        let _ = write!(
                            p.main,
                            "<td><time datetime=\"{stamp}\" title=\"{stamp}\">{rel}</time></td>"
                        );
                    }
                    None => p.main.push_str("<td></td>"),
                }
            }
            p.main.push_str("</tr>");
        }
        p.main.push_str("</tbody></table>");
    }
    let sort = if by_time { "&sort=time" } else { "" };
    p.main.push_str("<nav class=\"pager\">");
    if paging.from > 0 {
        let _ = write!(
            p.main,
            "<a href=\"/ui/r/{}?from={}{sort}\">Previous</a>",
            esc(name),
            paging.from.saturating_sub(paging.page)
        );
    }
    if paging.from.saturating_add(paging.page) < paging.total {
        let _ = write!(
            p.main,
            "<a rel=\"next\" href=\"/ui/r/{}?from={}{sort}\">Next page</a>",
            esc(name),
            paging.from.saturating_add(paging.page)
        );
    }
    p.main.push_str("</nav>");
    p
}

/// The `docker pull`, `podman pull` and `ctr` commands for `reference` (`host/name:tag` or
/// `host/name@digest`), each with a copy button and the flags a plain-HTTP registry needs.
/// docker has no such flag: it pulls over plain HTTP from a loopback host only, and from any
/// other once the daemon lists it in `insecure-registries`, which a hint then says.
fn pull_commands(out: &mut String, reference: &str, plain_http: bool) {
    let (podman_flags, ctr_flags) =
        if plain_http { (" --tls-verify=false", " --plain-http") } else { ("", "") };
    out.push_str("<ul class=\"pull\">");
    for cmd in [
        format!("docker pull {reference}"),
        format!("podman pull{podman_flags} {reference}"),
        format!("ctr images pull{ctr_flags} {reference}"),
    ] {
        let _ = write!(
            out,
            "<li><code>{c}</code><button type=\"button\" class=\"copy\" data-copy=\"{c}\" aria-label=\"Copy\">Copy</button></li>",
            c = esc(&cmd)
        );
    }
    out.push_str("</ul>");
    let host = reference.split('/').next().unwrap_or_default();
    if plain_http && !loopback(host) {
        let _ = write!(
            out,
            "<p class=\"hint\">docker pulls over plain HTTP only from hosts its daemon lists: add \
             <code>\"insecure-registries\": [\"{}\"]</code> to <code>/etc/docker/daemon.json</code>.</p>",
            esc(host)
        );
    }
}

/// Whether `host` (`name[:port]`, `[v6]:port`) is a loopback host, as docker judges it.
fn loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(n, _)| n),
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What the image page shows.
pub(crate) struct Image<'a> {
    pub(crate) repo: &'a str,
    pub(crate) upstream: Option<String>,
    pub(crate) tag: Option<&'a str>,
    pub(crate) digest: &'a str,
    pub(crate) size: u64,
    pub(crate) media_type: &'a str,
    pub(crate) manifest: &'a Value,
    pub(crate) config: &'a Value,
    pub(crate) referrers: &'a Value,
    pub(crate) host: String,
    pub(crate) plain_http: bool,
}

fn str_of<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn short(digest: &str) -> &str {
    // `algorithm:` and 12 characters of the hex; a digest from a manifest body may be anything.
    match digest.split_once(':') {
        Some((alg, hex)) => hex.char_indices().nth(12).map_or(digest, |(i, _)| &digest[..alg.len() + 1 + i]),
        None => digest,
    }
}

/// A digest of another manifest of `repo`: a link to its page when it is one, text otherwise.
fn digest_link(repo: &str, digest: &str) -> String {
    match digest.parse::<donjon_core::Digest>() {
        Ok(d) => format!("<a href=\"/ui/r/{}@{d}\"><code>{}</code></a>", esc(repo), esc(short(digest))),
        Err(_) => format!("<code>{}</code>", esc(digest)),
    }
}

/// Key-value rows (labels, annotations), sorted by key.
fn pairs(out: &mut String, title: &str, id: &str, map: Option<&Value>) {
    let Some(map) = map.and_then(Value::as_object).filter(|m| !m.is_empty()) else { return };
    let _ = write!(out, "<h2>{title}</h2><table class=\"kv\" id=\"{id}\"><tbody>");
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for k in keys {
        let v = match &map[k] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    out.push_str("</tbody></table>");
}

pub(crate) fn image(i: &Image<'_>) -> Page {
    let shown = match i.tag {
        Some(t) => format!("{}:{t}", i.repo),
        None => format!("{}@{}", i.repo, short(i.digest)),
    };
    let mut p = Page::new(&shown).crumb(i.repo, Some(format!("/ui/r/{}", i.repo))).crumb(
        &match i.tag {
            Some(t) => t.to_string(),
            None => short(i.digest).to_string(),
        },
        None,
    );
    let _ = write!(p.main, "<h1>{}{}</h1>", esc(&shown), badge(i.upstream.as_deref()));
    let reference = match i.tag {
        Some(t) => format!("{}/{}:{t}", i.host, i.repo),
        None => format!("{}/{}@{}", i.host, i.repo, i.digest),
    };
    pull_commands(&mut p.main, &reference, i.plain_http);
    let m = i.manifest;
    summary(&mut p.main, i);
    platforms(&mut p.main, i.repo, m);
    layers(&mut p.main, m);
    pairs(&mut p.main, "Labels", "labels", i.config.get("config").and_then(|x| x.get("Labels")));
    pairs(&mut p.main, "Annotations", "annotations", m.get("annotations"));

    referrers(&mut p.main, i.repo, i.referrers);
    p
}

/// The summary table: digest, media type, size, artifact type, subject, platform, creation.
fn summary(out: &mut String, i: &Image<'_>) {
    let m = i.manifest;
    let _ = write!(
        out,
        "<table class=\"kv\" id=\"summary\"><tbody>\
         <tr><th>Digest</th><td><code class=\"digest\">{d}</code>\
         <button type=\"button\" class=\"copy\" data-copy=\"{d}\" aria-label=\"Copy digest\">Copy</button></td></tr>\
         <tr><th>Media type</th><td>{}</td></tr><tr><th>Manifest size</th><td>{}</td></tr>",
        esc(i.media_type),
        size(i.size),
        d = esc(i.digest)
    );
    let artifact_type = m.get("artifactType").and_then(Value::as_str);
    if let Some(a) = artifact_type {
        let _ = write!(out, "<tr><th>Artifact type</th><td>{}</td></tr>", esc(a));
    }
    if let Some(s) = m.get("subject").and_then(|s| s.get("digest")).and_then(Value::as_str) {
        let _ = write!(out, "<tr><th>Refers to</th><td>{}</td></tr>", digest_link(i.repo, s));
    }
    let c = i.config;
    if !c.is_null() {
        let platform = [str_of(c, "os"), str_of(c, "architecture"), str_of(c, "variant")]
            .into_iter()
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        if !platform.is_empty() {
            let _ = write!(out, "<tr><th>Platform</th><td>{}</td></tr>", esc(&platform));
        }
        if let Some(created) = c.get("created").and_then(Value::as_str) {
            let _ = write!(
                out,
                "<tr><th>Created</th><td><time datetime=\"{c}\">{c}</time></td></tr>",
                c = esc(created)
            );
        }
    }
    out.push_str("</tbody></table>");
}

/// An index's children, by platform.
fn platforms(out: &mut String, repo: &str, m: &Value) {
    if let Some(children) = m.get("manifests").and_then(Value::as_array) {
        out.push_str("<h2>Platforms</h2><table id=\"platforms\"><thead><tr><th>Platform</th><th>Digest</th><th>Size</th></tr></thead><tbody>");
        for child in children {
            let pf = child.get("platform").cloned().unwrap_or(Value::Null);
            let mut name = [str_of(&pf, "os"), str_of(&pf, "architecture"), str_of(&pf, "variant")]
                .into_iter()
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
                .join("/");
            if name.is_empty() {
                name = str_of(child, "artifactType").to_string();
            }
            if name.is_empty() {
                name = "unknown".into();
            }
            let d = str_of(child, "digest");
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&name),
                digest_link(repo, d),
                size(child.get("size").and_then(Value::as_u64).unwrap_or(0)),
            );
        }
        out.push_str("</tbody></table>");
    }
}

/// An image's layers, with their total size.
fn layers(out: &mut String, m: &Value) {
    if let Some(layers) = m.get("layers").and_then(Value::as_array) {
        let total: u64 = layers.iter().filter_map(|l| l.get("size").and_then(Value::as_u64)).sum();
        let _ = write!(
            out,
            "<h2>Layers <span class=\"count\">{} · {}</span></h2><table id=\"layers\"><thead><tr><th>#</th><th>Digest</th><th>Media type</th><th class=\"num\">Size</th></tr></thead><tbody>",
            layers.len(),
            size(total)
        );
        for (n, l) in layers.iter().enumerate() {
            let _ = write!(
                out,
                "<tr><td>{}</td><td><code title=\"{d}\">{}</code></td><td>{}</td><td class=\"num\">{}</td></tr>",
                n + 1,
                esc(short(str_of(l, "digest"))),
                esc(str_of(l, "mediaType")),
                size(l.get("size").and_then(Value::as_u64).unwrap_or(0)),
                d = esc(str_of(l, "digest"))
            );
        }
        out.push_str("</tbody></table>");
    }
}

/// The referrers, grouped by artifact type: signatures, SBOMs, attestations.
fn referrers(out: &mut String, repo: &str, refs: &Value) {
    if let Some(refs) = refs.as_array().filter(|r| !r.is_empty()) {
        let mut groups: std::collections::BTreeMap<String, Vec<&Value>> = Default::default();
        for r in refs {
            let kind = r.get("artifactType").and_then(Value::as_str).unwrap_or("(no artifact type)");
            groups.entry(kind.to_string()).or_default().push(r);
        }
        out.push_str("<h2>Referrers</h2><div id=\"referrers\">");
        for (kind, items) in groups {
            let _ = write!(
                out,
                "<h3>{} <span class=\"count\">{}</span></h3><ul class=\"refs\">",
                esc(&kind),
                items.len()
            );
            for r in items {
                let d = str_of(r, "digest");
                let note = r
                    .get("annotations")
                    .and_then(Value::as_object)
                    .and_then(|a| a.get("org.opencontainers.image.created").or_else(|| a.values().next()))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let _ = write!(
                    out,
                    "<li>{} {} <span class=\"muted\">{}</span></li>",
                    digest_link(repo, d),
                    size(r.get("size").and_then(Value::as_u64).unwrap_or(0)),
                    esc(note),
                );
            }
            out.push_str("</ul>");
        }
        out.push_str("</div>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_in_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(5 << 20), "5.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }

    #[test]
    fn every_markup_character_is_escaped() {
        assert_eq!(esc("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
        assert!(matches!(esc("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn digests_are_shortened_on_character_boundaries() {
        assert_eq!(short("sha256:0123456789abcdef"), "sha256:0123456789ab");
        assert_eq!(short("sha256:aaaaaaaaaaaéééé"), "sha256:aaaaaaaaaaaé");
        assert_eq!(short("sha256:éé"), "sha256:éé");
        assert_eq!(digest_link("a", "\"><b>"), "<code>&quot;&gt;&lt;b&gt;</code>");
        assert!(
            digest_link("a", &format!("sha256:{}", "0".repeat(64))).starts_with("<a href=\"/ui/r/a@sha256:")
        );
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(query_escape("a b&c=d/e"), "a%20b%26c%3Dd/e");
    }

    #[test]
    fn annotations_are_shown_as_text() {
        let m = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "annotations": {"<b>k</b>": "<script>alert(1)</script>"},
            "layers": [],
        });
        let page = image(&Image {
            repo: "a",
            upstream: None,
            tag: Some("t"),
            digest: "sha256:00",
            size: 1,
            media_type: "x",
            manifest: &m,
            config: &Value::Null,
            referrers: &Value::Null,
            host: "h".into(),
            plain_http: true,
        })
        .finish(&Chrome { login: false, signed_in: false });
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{page}");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(page.contains("&lt;b&gt;k&lt;/b&gt;"));
    }
}
