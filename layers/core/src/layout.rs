//! CNCF Distribution's storage layout (v2), the one place that spells it: every backend
//! (filesystem, object storage) joins these paths to its own root, so a directory or bucket
//! written by Distribution is read as it is, and back.
//!
//! ```
//! use donjon_core::{layout, Digest, Name};
//!
//! let repo: Name = "library/busybox".parse().unwrap();
//! let d = Digest::sha256_of(b"x");
//! assert_eq!(layout::BASE, "docker/registry/v2");
//! assert!(layout::blob_data(&d).starts_with(&format!("blobs/sha256/{}/", &d.hex()[..2])));
//! assert_eq!(
//!     layout::layer_link(&repo, &d),
//!     format!("repositories/library/busybox/_layers/sha256/{}/link", d.hex())
//! );
//! ```

use crate::digest::Digest;
use crate::name::Name;

/// Where the layout begins under a backend's root.
pub const BASE: &str = "docker/registry/v2";

/// `blobs/<alg>/<2 hex>/<hex>/data`: a blob's bytes (manifests too).
pub fn blob_data(d: &Digest) -> String {
    let hex = d.hex();
    format!("blobs/{}/{}/{}/data", d.algorithm().as_str(), &hex[..2], hex)
}

/// `repositories/<name>`.
pub fn repository(repo: &Name) -> String {
    format!("repositories/{repo}")
}

/// `…/_layers/<alg>/<hex>/link`: the repository may read this blob.
pub fn layer_link(repo: &Name, d: &Digest) -> String {
    format!("repositories/{repo}/_layers/{}/{}/link", d.algorithm().as_str(), d.hex())
}

/// `…/_manifests/revisions/<alg>/<hex>`: a manifest revision's folder (its `link`).
pub fn revision_dir(repo: &Name, d: &Digest) -> String {
    format!("repositories/{repo}/_manifests/revisions/{}/{}", d.algorithm().as_str(), d.hex())
}

/// `…/_manifests/tags/<tag>`: a tag's folder (`current/link`, `index/<alg>/<hex>/link`).
pub fn tag_dir(repo: &Name, tag: &str) -> String {
    format!("repositories/{repo}/_manifests/tags/{tag}")
}

/// `…/_uploads/<id>`: an upload session's folder.
pub fn upload_dir(repo: &Name, id: &str) -> String {
    format!("repositories/{repo}/_uploads/{id}")
}

/// `…/_referrers/<alg>/<hex>`: donjon's referrers index of a subject (Distribution ignores it).
pub fn referrers_dir(repo: &Name, subject: &Digest) -> String {
    format!("repositories/{repo}/_referrers/{}/{}", subject.algorithm().as_str(), subject.hex())
}
