//! `xeroctl config add|use|list|remove`: contexts in the config file.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::cli::{ConfigCommand, GlobalArgs};
use crate::confirm::Confirmation;
use crate::exit;
use crate::output::{Column, Printer, col, wide};
use crate::settings::{ConfigFile, ContextEntry, config_path};

/// `-o name` prints `context/<name>`.
const KIND: &str = "context";

pub fn run(
    global: &GlobalArgs,
    out: Printer,
    confirm: Confirmation,
    command: ConfigCommand,
) -> anyhow::Result<()> {
    let path = config_path(global)?;
    let mut file = ConfigFile::load(&path)?;
    match command {
        ConfigCommand::Add { name, api_key_file, fetch_ca, ca_fingerprint } => {
            let request = AddRequest { name, api_key_file, fetch_ca, ca_fingerprint };
            add(global, &path, &mut file, request)
        }
        ConfigCommand::Use { name } => {
            if !file.contexts.contains_key(&name) {
                return Err(exit::not_found(format!(
                    "no context named {name:?} (see `xeroctl config list`)"
                )));
            }
            file.current_context = Some(name.clone());
            file.save(&path)?;
            println!("Now using context {name:?}");
            Ok(())
        }
        ConfigCommand::Remove { name } => {
            if !file.contexts.contains_key(&name) {
                return Err(exit::not_found(format!("no context named {name:?}")));
            }
            confirm.confirm(
                &format!("remove context {name:?}"),
                "Its router URL, CA file setting and any API key stored in it are removed from \
                 the config file.",
            )?;
            file.contexts.remove(&name);
            if file.current_context.as_deref() == Some(name.as_str()) {
                file.current_context = None;
            }
            file.save(&path)?;
            println!("Removed context {name:?}");
            Ok(())
        }
        ConfigCommand::List => list(out, &file),
    }
}

/// What `config add` was asked to record.
#[derive(Debug)]
struct AddRequest {
    name: String,
    api_key_file: Option<PathBuf>,
    fetch_ca: bool,
    ca_fingerprint: Option<String>,
}

fn add(
    global: &GlobalArgs,
    path: &std::path::Path,
    file: &mut ConfigFile,
    request: AddRequest,
) -> anyhow::Result<()> {
    let AddRequest { name, api_key_file, fetch_ca, ca_fingerprint } = request;
    let Some(base_url) = global.base_url.clone() else {
        return Err(exit::usage(format!(
            "give the router URL: xeroctl config add {name} --base-url https://router:8080 \
             [--api-key xero_… | --api-key-file FILE] [--ca-file FILE | --fetch-ca]"
        )));
    };
    reqwest::Url::parse(&base_url)
        .map_err(|_| exit::usage(format!("--base-url {base_url:?} is not a URL")))?;
    if global.api_key.is_some() && api_key_file.is_some() {
        return Err(exit::usage("give --api-key or --api-key-file, not both"));
    }
    if fetch_ca && global.ca_file.is_some() {
        return Err(exit::usage("give --ca-file or --fetch-ca, not both"));
    }
    let api_key_file = api_key_file.map(absolute).transpose()?;
    let ca_file = match (fetch_ca, &global.ca_file) {
        (true, _) => {
            let expected = ca_fingerprint.as_deref();
            Some(crate::fetch_ca::fetch_and_save_ca(&base_url, path, &name, expected)?)
        }
        (false, Some(ca)) => Some(absolute(ca.clone())?),
        (false, None) => None,
    };
    let entry = ContextEntry { base_url, api_key: global.api_key.clone(), api_key_file, ca_file };
    file.contexts.insert(name.clone(), entry);
    if file.current_context.is_none() {
        file.current_context = Some(name.clone());
    }
    file.save(path)?;
    println!("Context {name:?} saved in {}", path.display());
    Ok(())
}

const COLUMNS: [Column; 5] =
    [col("CURRENT"), col("NAME"), col("BASE URL"), col("API KEY"), wide("CA FILE")];

fn list(out: Printer, file: &ConfigFile) -> anyhow::Result<()> {
    let contexts: Vec<_> = file
        .contexts
        .iter()
        .map(|(name, c)| {
            serde_json::json!({
                "name": name,
                "current": file.current_context.as_deref() == Some(name.as_str()),
                "base_url": c.base_url,
                "api_key": c.api_key.as_ref().map(|_| "(stored)"),
                "api_key_file": c.api_key_file,
                "ca_file": c.ca_file,
            })
        })
        .collect();
    let name = |c: &serde_json::Value| c["name"].as_str().unwrap_or_default().to_string();
    out.list(&contexts, KIND, &contexts, &COLUMNS, name, |c| {
        let current = if c["current"] == true { "*" } else { "" };
        let key = match (&c["api_key"], &c["api_key_file"]) {
            (serde_json::Value::String(_), _) => "(stored)".to_string(),
            (_, serde_json::Value::String(f)) => f.clone(),
            _ => "-".to_string(),
        };
        vec![
            current.to_string(),
            name(c),
            c["base_url"].as_str().unwrap_or_default().to_string(),
            key,
            c["ca_file"].as_str().unwrap_or("-").to_string(),
        ]
    })
}

fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path);
    }
    Ok(std::env::current_dir().context("resolving a relative path")?.join(path))
}
