//! `xeroctl config add … --fetch-ca`: trust on first use, made explicit. The router's chain is
//! captured during a TLS handshake by a verifier that records it (and checks that the server
//! certificate is issued, for this host, by the last certificate of the chain, the CA); the
//! CA's fingerprint is shown for the operator to confirm on a terminal, or checked against
//! `--ca-fingerprint` without one. Only then is the CA written next to the config file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;
use xerotier_tls::{AnchorChoice, AnchoredVerifier};

use crate::confirm::Confirmation;
use crate::exit::{self, CliError};
use crate::tls::{fingerprint, fingerprint_matches, pem};

/// Records the chain the server presents and takes its last certificate (the CA) as the one
/// anchor: the handshake succeeds only if the chain is consistent (the server certificate
/// verifies, for the name dialled, under the chain's own last certificate).
#[derive(Debug, Default)]
struct LastOfChain {
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl AnchorChoice for LastOfChain {
    fn choose(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Option<CertificateDer<'static>>, rustls::Error> {
        let chain: Vec<CertificateDer<'static>> = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.clone().into_owned())
            .collect();
        *self.chain.lock() = chain.clone();
        match chain.get(1..).and_then(<[_]>::last) {
            Some(ca) => Ok(Some(ca.clone())),
            None => Err(rustls::Error::General(
                "the router presents no CA certificate after its own".into(),
            )),
        }
    }
}

/// The chain the router at `base_url` presents, after a TLS handshake and a `GET /healthz`.
fn fetch_chain(base_url: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnchoredVerifier::new(LastOfChain::default()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .build()
        .context("building the HTTP client")?;
    let url = format!("{}/healthz", base_url.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let answer = runtime.block_on(async { http.get(&url).send().await });
    let chain = verifier.choice().chain.lock().clone();
    match answer {
        Ok(response) if response.status().is_success() => Ok(chain),
        Ok(response) => Err(CliError::Unavailable(format!(
            "{url} answered HTTP {}: is this a Xerotier router?",
            response.status()
        ))
        .into()),
        Err(err) => Err(CliError::Unavailable(format!(
            "fetching the router's CA from {base_url} failed: {}",
            error_chain(&err)
        ))
        .into()),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Fetches the CA of the router at `base_url`, has it confirmed (`expected`, or the operator on
/// a terminal), and writes it next to `config_path` for context `context`; its path.
pub fn fetch_and_save_ca(
    base_url: &str,
    config_path: &Path,
    context: &str,
    expected: Option<&str>,
) -> anyhow::Result<PathBuf> {
    if !base_url.starts_with("https://") {
        return Err(exit::usage(format!(
            "--fetch-ca needs an https:// router URL, not {base_url:?}"
        )));
    }
    if !context.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(exit::usage(format!(
            "with --fetch-ca the context name becomes a file name: {context:?} may hold only \
             letters, digits, '-', '_' and '.'"
        )));
    }
    let chain = fetch_chain(base_url)?;
    let Some(ca) = chain.last() else {
        return Err(CliError::Unavailable("the router presented no certificate".into()).into());
    };
    let found = fingerprint(ca);
    eprintln!("The router at {base_url} presents CA certificate {found}");
    match expected {
        Some(expected) if fingerprint_matches(expected, &found) => {
            eprintln!("It matches --ca-fingerprint.");
        }
        Some(expected) => {
            return Err(CliError::NotConfirmed(format!(
                "the router's CA is {found}, not {expected} (--ca-fingerprint): not trusted, \
                 nothing saved. Check `<state-dir>/tls/ca.pem` on the router host."
            ))
            .into());
        }
        None => {
            // Never trusted silently, not even with --yes: a terminal and a person, or the
            // fingerprint given in advance.
            let ask = Confirmation { assume_yes: false, dry_run: false };
            ask.confirm(
                &format!("trust this CA for context {context:?}"),
                "Compare it with the fingerprint of the router's <state-dir>/tls/ca.pem \
                 (without a terminal, pass --ca-fingerprint sha256:…).",
            )
            .map_err(|_| {
                CliError::NotConfirmed(format!(
                    "the router's CA {found} was not confirmed: not trusted, nothing saved. \
                     Compare it with the router's <state-dir>/tls/ca.pem, then confirm at a \
                     terminal or pass --ca-fingerprint sha256:… (that file's)."
                ))
            })?;
        }
    }
    let dir = config_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{context}-ca.pem"));
    xerotier_credentials::write_secret_file(&path, pem(ca).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("Saved the CA to {}", path.display());
    Ok(path)
}
