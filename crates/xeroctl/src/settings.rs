//! Contexts (`~/.config/xeroctl/config.toml`) and how the router URL, API key and CA are
//! chosen: flag, then environment, then the context, then the default URL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::cli::GlobalArgs;

pub const DEFAULT_BASE_URL: &str = "https://127.0.0.1:8080";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, ContextEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextEntry {
    pub base_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_file: Option<PathBuf>,
    /// The PEM CA certificate to trust for this router (only it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

pub fn config_path(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    if let Some(path) = &global.config {
        return Ok(path.clone());
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => bail!("cannot locate the config file: set HOME, XDG_CONFIG_HOME or --config"),
        },
    };
    Ok(base.join("xeroctl").join("config.toml"))
}

impl ConfigFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Written 0600 and atomically: the file may hold API keys.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string_pretty(self).context("encoding the config file")?;
        xerotier_credentials::write_secret_file(path, text.as_bytes())?;
        Ok(())
    }
}

/// Where to send requests, and with which key.
#[derive(Debug)]
pub struct Target {
    pub base_url: String,
    pub api_key: Option<SecretString>,
    /// Trust only this CA (`--ca-file`, `XEROCTL_CA_FILE`, the context's `ca_file`).
    pub ca_file: Option<PathBuf>,
}

pub fn resolve(global: &GlobalArgs) -> anyhow::Result<Target> {
    let path = config_path(global)?;
    let file = ConfigFile::load(&path)?;
    let context = match global.context.as_ref().or(file.current_context.as_ref()) {
        Some(name) => match file.contexts.get(name) {
            Some(entry) => Some(entry.clone()),
            None => {
                return Err(crate::exit::usage(format!(
                    "no context named {name:?} in {} (see `xeroctl config list`)",
                    path.display()
                )));
            }
        },
        None => None,
    };
    let base_url = global
        .base_url
        .clone()
        .or_else(|| context.as_ref().map(|c| c.base_url.clone()))
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
    let api_key = match (&global.api_key, &context) {
        (Some(key), _) => Some(SecretString::from(key.clone())),
        (None, Some(ContextEntry { api_key: Some(key), .. })) => {
            Some(SecretString::from(key.clone()))
        }
        (None, Some(ContextEntry { api_key_file: Some(file), .. })) => {
            let key = xerotier_credentials::read_secret_file(file).with_context(|| {
                format!("reading the context's API key file {}", file.display())
            })?;
            Some(key)
        }
        _ => None,
    };
    if api_key.as_ref().is_some_and(|k| k.expose_secret().trim().is_empty()) {
        return Err(crate::exit::usage("the API key is empty"));
    }
    let ca_file =
        global.ca_file.clone().or_else(|| context.as_ref().and_then(|c| c.ca_file.clone()));
    Ok(Target { base_url: base_url.trim_end_matches('/').to_string(), api_key, ca_file })
}
