//! The configuration loader: any YAML (donjon's keys, Distribution's, Trow's) gives settings
//! or a ConfigError that names the problem, never a panic; settings always render for
//! `--dry-run`.
#![no_main]

use clap::Parser;
use donjon::config::{Cli, Settings};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|yaml: &str| {
    let cli = Cli::parse_from(["donjon"]);
    match Settings::from_yaml(&cli, yaml, std::iter::empty()) {
        Ok(s) => {
            let _ = s.to_yaml();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
