use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::cli::{ConfigCommand, GlobalArgs, OutputFormat};
use crate::output;
use crate::settings::{ConfigFile, ContextEntry, config_path};

pub fn run(global: &GlobalArgs, command: ConfigCommand) -> anyhow::Result<()> {
    let path = config_path(global)?;
    let mut file = ConfigFile::load(&path)?;
    match command {
        ConfigCommand::Add { name, api_key_file } => {
            let Some(base_url) = global.base_url.clone() else {
                bail!(
                    "give the router URL: xeroctl config add {name} --base-url http://router:8080 [--api-key xero_… | --api-key-file FILE]"
                );
            };
            reqwest::Url::parse(&base_url)
                .with_context(|| format!("--base-url {base_url:?} is not a URL"))?;
            if global.api_key.is_some() && api_key_file.is_some() {
                bail!("give --api-key or --api-key-file, not both");
            }
            let api_key_file = api_key_file.map(absolute).transpose()?;
            let ca_file = global.ca_file.clone().map(absolute).transpose()?;
            let entry =
                ContextEntry { base_url, api_key: global.api_key.clone(), api_key_file, ca_file };
            file.contexts.insert(name.clone(), entry);
            if file.current_context.is_none() {
                file.current_context = Some(name.clone());
            }
            file.save(&path)?;
            println!("Context {name:?} saved in {}", path.display());
        }
        ConfigCommand::Use { name } => {
            if !file.contexts.contains_key(&name) {
                bail!("no context named {name:?} (see `xeroctl config list`)");
            }
            file.current_context = Some(name.clone());
            file.save(&path)?;
            println!("Now using context {name:?}");
        }
        ConfigCommand::Remove { name } => {
            if file.contexts.remove(&name).is_none() {
                bail!("no context named {name:?}");
            }
            if file.current_context.as_deref() == Some(name.as_str()) {
                file.current_context = None;
            }
            file.save(&path)?;
            println!("Removed context {name:?}");
        }
        ConfigCommand::List => {
            if global.output == OutputFormat::Json {
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
                        })
                    })
                    .collect();
                return output::json(&contexts);
            }
            let rows = file
                .contexts
                .iter()
                .map(|(name, c)| {
                    let current = if file.current_context.as_deref() == Some(name.as_str()) {
                        "*"
                    } else {
                        ""
                    };
                    let key = match (&c.api_key, &c.api_key_file) {
                        (Some(_), _) => "(stored)".to_string(),
                        (None, Some(f)) => f.display().to_string(),
                        _ => "-".to_string(),
                    };
                    vec![current.to_string(), name.clone(), c.base_url.clone(), key]
                })
                .collect();
            output::table(&["CURRENT", "NAME", "BASE URL", "API KEY"], rows);
        }
    }
    Ok(())
}

fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path);
    }
    Ok(std::env::current_dir().context("resolving --api-key-file")?.join(path))
}
