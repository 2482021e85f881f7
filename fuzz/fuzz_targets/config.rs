//! The configuration loader: any YAML (donjon's keys, Distribution's, Trow's) and any
//! `REGISTRY_*` environment gives settings or a ConfigError that names the problem, never a
//! panic; settings always render for `--dry-run`. The input is the YAML, then optionally a
//! line `%%` and `NAME=value` lines: the environment, applied in name order whatever their
//! order here (the outcome must not depend on it).
#![no_main]

use clap::Parser;
use donjon::config::{Cli, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let (yaml, env) = input.split_once("\n%%\n").unwrap_or((input, ""));
    let vars: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("REGISTRY_{k}"), v.to_string()))
        .collect();
    let cli = Cli::parse_from(["donjon"]);
    let load = |vars: &[(String, String)]| match Settings::from_yaml(&cli, yaml, vars.iter().cloned()) {
        Ok(s) => Ok(s.to_yaml()),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            Err(e.to_string())
        }
    };
    let forward = load(&vars);
    // The same variables in the other order, names unique (a process environment's are).
    let mut unique = vars.clone();
    unique.sort_by(|a, b| a.0.cmp(&b.0));
    unique.dedup_by(|a, b| a.0 == b.0);
    if unique.len() == vars.len() {
        let mut reversed = vars;
        reversed.reverse();
        assert_eq!(load(&reversed), forward, "the environment's order changed the settings");
    }
});
