//! Trow's flags and donjon's (and Trow's) own top-level keys, mapped onto the settings. These
//! win over Distribution's keys for the same thing (`bind` over `http.addr`, `data_dir` over
//! `storage.filesystem.rootdirectory`), and flags win over everything.

use std::path::PathBuf;
use std::time::Duration;

use donjon_core::config::{duration, ConfigError, Warnings};
use serde::Deserialize;

use super::{Settings, Tls};

/// Command-line flags (Trow's names).
#[derive(clap::Parser, Debug, Clone, Default)]
#[command(name = "donjon", version = crate::VERSION, about = "An OCI container image registry")]
pub struct Cli {
    /// Address to listen on: HOST:PORT, :PORT or PORT [default: 127.0.0.1:8000]
    #[arg(long)]
    pub bind: Option<String>,
    /// Directory for images and uploads [default: ./data]
    #[arg(short = 'd', long)]
    pub data_dir: Option<PathBuf>,
    /// YAML configuration file (donjon's, Trow's or a Distribution config.yml)
    #[arg(long, global = true, env = "DONJON_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// The registry's host names, the public one first (comma- or space-separated); images
    /// named with them are "local" to image validation
    #[arg(short = 'n', long, visible_alias = "names", global = true)]
    pub hostname: Option<String>,
    /// Serve TLS with this PEM certificate chain and key: --tls CERT,KEY
    #[arg(long, value_delimiter = ',', num_args = 1, value_name = "CERT,KEY")]
    pub tls: Option<Vec<PathBuf>>,
    /// A user who may log in (with --password), beside any htpasswd file
    #[arg(long, requires = "password")]
    pub user: Option<String>,
    /// The --user's password, or file://PATH to read it from a file
    #[arg(long, requires = "user")]
    pub password: Option<String>,
    /// Proxy Docker Hub under f/docker/ (Trow's flag; `registry_proxies` has more)
    #[arg(long)]
    pub proxy_docker_hub: bool,
    /// The Docker Hub user for --proxy-docker-hub
    #[arg(long, requires = "proxy_docker_hub")]
    pub hub_user: Option<String>,
    /// A file holding the Docker Hub token (password) for --hub-user
    #[arg(long, requires = "hub_user")]
    pub hub_token_file: Option<PathBuf>,
    /// Trow's image policy file: `default`, `allow`, `deny` (the keys of `image_validation`)
    #[arg(long, global = true, value_name = "FILE")]
    pub image_validation_config_file: Option<PathBuf>,
    /// Allow images starting with these prefixes (Trow's older flag; comma- or space-separated)
    #[arg(long, global = true, value_delimiter = ',', value_name = "PREFIXES")]
    pub allow_prefixes: Vec<String>,
    /// Allow these whole images, host included (Trow's older flag)
    #[arg(long, global = true, value_delimiter = ',', value_name = "IMAGES")]
    pub allow_images: Vec<String>,
    /// Refuse this registry's images under these prefixes, without the host (Trow's older flag)
    #[arg(long, global = true, value_delimiter = ',', value_name = "PREFIXES")]
    pub disallow_local_prefixes: Vec<String>,
    /// Refuse these images of this registry, without the host (Trow's older flag)
    #[arg(long, global = true, value_delimiter = ',', value_name = "IMAGES")]
    pub disallow_local_images: Vec<String>,
    /// Check the configuration, print the effective settings and exit
    #[arg(long)]
    pub dry_run: bool,
    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The binary's other commands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Ask the image policy (`image_validation`) about image references: prints each decision
    /// and its reason; exit status 1 if any is refused
    CheckImage {
        /// Image references, as pod specs write them
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Collect garbage on the store the configuration names, while the registry runs:
    /// untagged manifests (with --delete-untagged), then blobs no manifest references
    /// (Distribution's command, online)
    GarbageCollect {
        /// The configuration file (as Distribution's `registry garbage-collect CONFIG`; or
        /// --config-file)
        #[arg(value_name = "CONFIG")]
        config: Option<PathBuf>,
        /// Print what would be removed, with sizes; remove nothing
        #[arg(short = 'd', long)]
        dry_run: bool,
        /// Delete manifests no tag reaches first, except referrers of manifests that stay
        #[arg(short = 'm', long)]
        delete_untagged: bool,
        /// Keep what was written more recently than this [default: storage.maintenance.gc.grace, 1h]
        #[arg(long, value_parser = parse_duration)]
        grace: Option<Duration>,
        /// How long hidden blobs wait for a second look [default: storage.maintenance.gc.settle, 1m]
        #[arg(long, value_parser = parse_duration)]
        settle: Option<Duration>,
    },
    /// Serve, as without a command: Distribution's `registry serve CONFIG`, so that its image's
    /// command line (and its Helm chart's) works unchanged
    Serve {
        /// The configuration file (as --config-file)
        #[arg(value_name = "CONFIG")]
        config: Option<PathBuf>,
    },
    /// Ask the running registry for `/healthz` at the configured address (over TLS, trusting
    /// the configured certificate, when TLS is on): exit status 0 on a 200, 1 otherwise. The
    /// health command of an image that holds nothing but this binary
    Healthcheck {
        /// Give up after this long
        #[arg(long, value_parser = parse_duration, default_value = "3s")]
        timeout: Duration,
    },
    /// List a registry's repositories (every page of its catalog), or a repository's tags; any
    /// OCI registry, no configuration needed
    Ls {
        /// REGISTRY (host[:port]) or REGISTRY/REPO; an http:// or https:// in front sets the
        /// scheme
        #[arg(value_name = "REGISTRY[/REPO]", env = "DONJON_REGISTRY")]
        target: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a manifest: media type, digest and size; an index's platforms, an image's layers,
    /// config (created, labels) and annotations; the referrers, by artifact type
    Inspect {
        /// REGISTRY/REPO:TAG (default tag: latest) or REGISTRY/REPO@DIGEST
        #[arg(value_name = "REGISTRY/REPO[:TAG|@DIGEST]")]
        image: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a tag (REGISTRY/REPO:TAG), or a manifest with every tag on it
    /// (REGISTRY/REPO@DIGEST)
    Rm {
        /// REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST
        #[arg(value_name = "REGISTRY/REPO:TAG|@DIGEST")]
        image: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The flags of the client commands (`ls`, `inspect`, `rm`).
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Client options")]
pub struct ClientArgs {
    /// The user to log in as (with --password or --password-stdin); without it, the
    /// credentials docker login or podman login stored, else none
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// The --user's password (or token)
    #[arg(short = 'p', long = "password", value_name = "PASSWORD", conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the --user's password from the standard input
    #[arg(long)]
    pub password_stdin: bool,
    /// Plain HTTP instead of HTTPS (unless the registry is written with https://)
    #[arg(long)]
    pub insecure: bool,
    /// Also trust the PEM certificates of this file (a registry's self-signed certificate or
    /// its CA), beside the system's and Mozilla's roots
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Print JSON for scripts instead of text for people
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

/// Trow splits its lists on commas and on white space.
fn words(list: &[String]) -> Vec<String> {
    list.iter().flat_map(|v| v.split_whitespace()).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

/// donjon's and Trow's own top-level keys.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(super) struct File {
    bind: Option<String>,
    data_dir: Option<PathBuf>,
    hostname: Option<String>,
    tls: Option<TlsFile>,
    max_manifest_size: Option<usize>,
    /// Image manifests may name blobs that were not pushed (the spec's sparse data set).
    accept_missing_blobs: Option<bool>,
    #[serde(with = "duration::option")]
    drain_timeout: Option<Duration>,
    connections: Option<crate::server::Options>,
    registry_proxies: Option<donjon_proxy::ProxyConfig>,
    image_validation: Option<donjon_validate::ValidationConfig>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(default)]
struct TlsFile {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    certificate: Option<PathBuf>,
}

impl File {
    /// Maps the keys onto `s`, over what Distribution's keys said.
    pub(super) fn apply(self, s: &mut Settings, _w: &mut Warnings) -> Result<(), ConfigError> {
        if let Some(v) = self.image_validation {
            s.validation = Some(v);
        }
        if let Some(p) = self.registry_proxies {
            // Beside what Distribution's `proxy` section gave, which stays the default.
            let default = s.proxy.default.take();
            let mut registries = std::mem::take(&mut s.proxy.registries);
            s.proxy = p;
            registries.append(&mut s.proxy.registries);
            s.proxy.registries = registries;
            s.proxy.default = s.proxy.default.take().or(default);
        }
        if let Some(bind) = self.bind {
            s.bind = super::parse_bind(&bind).map_err(|e| ConfigError::new("bind", e))?;
        }
        if let Some(dir) = self.data_dir {
            s.data_dir = dir;
        }
        if let Some(host) = self.hostname {
            s.hostname = Some(host);
        }
        if let Some(t) = self.tls {
            match (t.cert.or(t.certificate), t.key) {
                (Some(cert), Some(key)) => s.tls = Some(Tls { cert, key }),
                _ => return Err(ConfigError::new("tls", "needs both cert and key")),
            }
        }
        if let Some(n) = self.max_manifest_size {
            s.upload.max_manifest_size = n;
        }
        if let Some(a) = self.accept_missing_blobs {
            s.upload.accept_missing_blobs = a;
        }
        if let Some(mut c) = self.connections {
            // Distribution's `http.draintimeout`, when given, names the same thing and wins.
            if s.connections.drain_timeout != crate::server::Options::default().drain_timeout {
                c.drain_timeout = s.connections.drain_timeout;
            }
            s.connections = c;
        }
        if let Some(d) = self.drain_timeout {
            s.connections.drain_timeout = d;
        }
        Ok(())
    }
}

impl Cli {
    /// Applies the flags, which win over every file and environment value.
    pub(super) fn apply(&self, s: &mut Settings, w: &mut Warnings) -> Result<(), ConfigError> {
        if let Some(bind) = &self.bind {
            s.bind = super::parse_bind(bind).map_err(|e| ConfigError::new("--bind", e))?;
        }
        if let Some(dir) = &self.data_dir {
            s.data_dir = dir.clone();
        }
        if let Some(host) = &self.hostname {
            s.names = words(&[host.replace(',', " ")]);
            s.hostname = s.names.first().cloned();
        }
        if let Some(p) = &self.image_validation_config_file {
            let text = std::fs::read_to_string(p)
                .map_err(|e| ConfigError::new("", format!("cannot read it: {e}")).in_file(p))?;
            let tree: serde_yaml::Value =
                serde_yaml::from_str(&text).map_err(|e| ConfigError::new("", e.to_string()).in_file(p))?;
            let (v, ignored) = super::read_shape(&tree).map_err(|e| e.in_file(p))?;
            for key in ignored {
                w.push(format!("{}: unknown image policy key `{key}` ignored", p.display()));
            }
            s.validation = Some(v);
        }
        let (allow_prefixes, allow_images) = (words(&self.allow_prefixes), words(&self.allow_images));
        let (deny_prefixes, deny_images) =
            (words(&self.disallow_local_prefixes), words(&self.disallow_local_images));
        if !(allow_prefixes.is_empty()
            && allow_images.is_empty()
            && deny_prefixes.is_empty()
            && deny_images.is_empty())
        {
            // Trow's older flags: images of this registry that are here may run, unless
            // refused; others only when allowed.
            let names = s.names.clone();
            let v = s.validation.get_or_insert_with(|| donjon_validate::ValidationConfig {
                check_local: true,
                allow: names.iter().map(|h| format!("{h}/")).collect(),
                ..Default::default()
            });
            v.allow.extend(allow_prefixes);
            v.allow_images.extend(allow_images);
            v.deny_local_prefixes.extend(deny_prefixes);
            v.deny_local_images.extend(deny_images);
        }
        if let (Some(u), Some(p)) = (&self.user, &self.password) {
            s.auth.user = Some((u.clone(), p.clone()));
        }
        if self.proxy_docker_hub {
            if self.hub_user.is_some() != self.hub_token_file.is_some() {
                return Err(ConfigError::new("--hub-user", "and --hub-token-file go together"));
            }
            s.proxy.registries.push(donjon_proxy::RegistryConfig {
                host: donjon_core::mirror::DOCKER_HUB.into(),
                username: self.hub_user.clone(),
                password_file: self.hub_token_file.clone(),
                ..Default::default()
            });
        }
        match &self.tls {
            Some(v) if v.len() == 2 => s.tls = Some(Tls { cert: v[0].clone(), key: v[1].clone() }),
            Some(v) => {
                return Err(ConfigError::new("--tls", format!("takes CERT,KEY; got {} value(s)", v.len())))
            }
            None => {}
        }
        Ok(())
    }
}
