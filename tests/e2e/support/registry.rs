//! Looking at a registry's content from outside: tags, catalog, copies checked blob by blob,
//! and the S3 `storage:` section both Distribution and donjon read.

use std::path::Path;

use super::*;

/// `skopeo list-tags`, sorted.
pub(crate) fn list_tags(s: &Scratch, repo: &str) -> Vec<String> {
    let mut c = skopeo(s);
    c.args(["list-tags", "--retry-times", "0", "--tls-verify=false", repo]);
    let v: Value = serde_json::from_str(&ok(&mut c)).unwrap();
    let mut tags: Vec<String> =
        v["Tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    tags.sort();
    tags
}

/// GET /v2/_catalog, the repositories in it.
pub(crate) fn catalog(host: &str) -> Vec<String> {
    let r = http(host, "GET", "/v2/_catalog?n=1000", &[]).unwrap_or_else(|e| panic!("catalog: {e}"));
    assert_eq!(r.status, 200, "GET /v2/_catalog: {}", String::from_utf8_lossy(&r.body));
    r.json()["repositories"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// GET /v2/REPO/tags/list: the status and the tags (`null` as none), sorted.
pub(crate) fn tags_raw(host: &str, repo: &str) -> (u16, Vec<String>) {
    let r = http(host, "GET", &format!("/v2/{repo}/tags/list"), &[]).unwrap_or_else(|e| panic!("tags: {e}"));
    println!("GET {host}/v2/{repo}/tags/list -> {} {}", r.status, String::from_utf8_lossy(&r.body));
    let mut tags: Vec<String> = if r.status == 200 {
        r.json()["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    } else {
        vec![]
    };
    tags.sort();
    (r.status, tags)
}

pub(crate) fn assert_catalog_has(host: &str, repos: &[&str]) {
    let cat = catalog(host);
    println!("catalog of {host}: {cat:?}");
    for r in repos {
        assert!(cat.iter().any(|c| c == r), "{r} missing from the catalog of {host}: {cat:?}");
    }
}

/// `skopeo copy [extra] SRC oci:DIR:TAG`, then: index.json names `want`, and each of `blobs`
/// is in the layout with its digest.
pub(crate) fn copy_out_and_check(
    s: &Scratch,
    extra: &[&str],
    src: &str,
    dir: &Path,
    tag: &str,
    want: &str,
    blobs: &[&str],
) {
    skopeo_copy(s, extra, src, &format!("oci:{}:{tag}", dir.display()));
    assert_eq!(layout_digest(dir, tag), want, "copied out {src}");
    for d in blobs {
        let hex = d.strip_prefix("sha256:").unwrap();
        assert_eq!(file_sha256(&dir.join("blobs/sha256").join(hex)), hex, "blob {d} of {src}");
    }
}

pub(crate) fn as_str(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The `storage:` section for the S3 driver on `g`'s bucket under `prefix`, read by both
/// Distribution and donjon.
pub(crate) fn s3_storage_yaml(g: &s3server::S3Server, prefix: &str) -> String {
    format!(
        "  s3:\n    bucket: {}\n    region: {}\n    regionendpoint: {}\n    \
         accesskey: {}\n    secretkey: {}\n    rootdirectory: {prefix}\n    \
         forcepathstyle: true\n    secure: false\n    v4auth: true\n    chunksize: 5242880\n",
        g.bucket(),
        g.region(),
        g.endpoint(),
        g.access_key(),
        g.secret_key(),
    )
}
