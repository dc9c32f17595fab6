//! The capability manifest, from `tools_dir`: one directory per tool bundle with a
//! `tool.yaml` and its executable, and `workspaces.yaml` declaring workspaces and the
//! credential file each uses. Validated at start; a bad bundle stops the agent with an error
//! naming the file.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use xerotier_proto::agents::{CapabilityManifest, ManifestTool, ManifestWorkspace};
use xerotier_proto::schema;
use xerotier_proto::tools::RISKS;
use xerotier_sandbox::{LandlockMode, Limits};

use crate::credentials::is_plain_file_name;

const TOOL_FILE: &str = "tool.yaml";
const WORKSPACES_FILE: &str = "workspaces.yaml";
const MAX_TIMEOUT_SECONDS: u64 = 86_400;
/// `tool.yaml` and `workspaces.yaml` are small. Larger files, or files with more flow
/// collections (`[`, `{`) than this, are refused before the YAML parser sees them: its scanner
/// does work proportional to the flow nesting depth for every token (quadratic overall).
const MAX_YAML_BYTES: usize = 64 * 1024;
const MAX_YAML_FLOW_COLLECTIONS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("tools_dir {0} does not exist or is not a directory")]
    MissingDir(PathBuf),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn invalid(path: &Path, message: impl Into<String>) -> CatalogError {
    CatalogError::Invalid { path: path.to_path_buf(), message: message.into() }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Io { path: path.to_path_buf(), source }
}

/// A tool the agent can run.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolBundle {
    pub name: String,
    pub description: String,
    pub risk: String,
    pub timeout: Duration,
    /// Absolute, inside the bundle directory.
    pub executable: PathBuf,
    pub args_schema: serde_json::Value,
    pub limits: Limits,
    pub sandbox: SandboxSettings,
}

/// `sandbox:` in `tool.yaml`: how far the tool's filesystem view is narrowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    #[serde(default)]
    pub landlock: LandlockMode,
    /// Absolute directories the tool may read and execute from, beyond the system ones and
    /// its own bundle.
    #[serde(default)]
    pub read_paths: Vec<PathBuf>,
}

/// `limits:` in `tool.yaml`; what is left out keeps its default ([`Limits::default`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    memory: Option<ByteSize>,
    processes: Option<u64>,
    open_files: Option<u64>,
    file_size: Option<ByteSize>,
    cpu_seconds: Option<u64>,
}

/// A size in bytes, written as a number or with a binary unit: `65536`, `64KiB`, `512MiB`,
/// `4GiB` (also `K`, `M`, `G`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteSize(u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(text) => parse_size(&text).map(Self).map_err(serde::de::Error::custom),
        }
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit.trim() {
        "" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => {
            return Err(format!("size {text:?}: unknown unit {other:?} (use KiB, MiB or GiB)"));
        }
    };
    let number: u64 = digits.parse().map_err(|_| format!("size {text:?} is not a number"))?;
    number.checked_mul(1u64 << shift).ok_or_else(|| format!("size {text:?} is too large"))
}

impl LimitsFile {
    /// The limits, each checked against a floor a working tool needs.
    fn resolve(&self) -> Result<Limits, String> {
        let default = Limits::default();
        let limits = Limits {
            memory_bytes: self.memory.map_or(default.memory_bytes, |s| s.0),
            processes: self.processes.unwrap_or(default.processes),
            open_files: self.open_files.unwrap_or(default.open_files),
            file_size_bytes: self.file_size.map_or(default.file_size_bytes, |s| s.0),
            cpu_seconds: self.cpu_seconds.unwrap_or(default.cpu_seconds),
        };
        let floors = [
            ("limits.memory", limits.memory_bytes, 16 << 20, "16MiB"),
            ("limits.processes", limits.processes, 1, "1"),
            ("limits.open_files", limits.open_files, 16, "16"),
            ("limits.file_size", limits.file_size_bytes, 0, "0"),
            ("limits.cpu_seconds", limits.cpu_seconds, 1, "1"),
        ];
        for (name, value, floor, shown) in floors {
            if value < floor {
                return Err(format!("{name} must be at least {shown}"));
            }
        }
        Ok(limits)
    }
}

/// A workspace: a kind of target system and the credential file its tools use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceDecl {
    pub id: String,
    /// e.g. `kubernetes` (which also sets `KUBECONFIG` for its tools).
    pub kind: String,
    /// A file name under `credentials_dir`.
    pub credentials_ref: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolFile {
    name: String,
    #[serde(default)]
    description: String,
    risk: String,
    timeout_seconds: u64,
    command: String,
    args_schema: serde_json::Value,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    sandbox: SandboxSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspacesFile {
    #[serde(default)]
    workspaces: Vec<WorkspaceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspaceEntry {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    credentials_ref: String,
}

/// Tool names and workspace ids: `[a-z0-9][a-z0-9._-]{0,63}`.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 64
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    tools: BTreeMap<String, ToolBundle>,
    workspaces: BTreeMap<String, WorkspaceDecl>,
}

impl Catalog {
    /// Loads and validates every bundle under `tools_dir`.
    pub fn load(tools_dir: &Path) -> Result<Self, CatalogError> {
        if !tools_dir.is_dir() {
            return Err(CatalogError::MissingDir(tools_dir.to_path_buf()));
        }
        let mut catalog = Catalog::default();
        let mut entries: Vec<_> = std::fs::read_dir(tools_dir)
            .map_err(io_error(tools_dir))?
            .collect::<Result<_, _>>()
            .map_err(io_error(tools_dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            // Files beside the bundles (workspaces.yaml, a README) are not tools.
            if path.is_dir() {
                let tool = load_tool(&path)?;
                catalog.tools.insert(tool.name.clone(), tool);
            }
        }
        let workspaces_path = tools_dir.join(WORKSPACES_FILE);
        if workspaces_path.exists() {
            catalog.workspaces = load_workspaces(&workspaces_path)?;
        }
        Ok(catalog)
    }

    pub fn tools(&self) -> impl Iterator<Item = &ToolBundle> {
        self.tools.values()
    }

    pub fn tool(&self, name: &str) -> Option<&ToolBundle> {
        self.tools.get(name)
    }

    pub fn workspace(&self, id: &str) -> Option<&WorkspaceDecl> {
        self.workspaces.get(id)
    }

    /// Every credential file some workspace uses, once each.
    pub fn credential_refs(&self) -> Vec<String> {
        let refs: BTreeSet<&String> =
            self.workspaces.values().map(|w| &w.credentials_ref).collect();
        refs.into_iter().cloned().collect()
    }

    /// What the agent publishes: tools by name, workspaces by id (so the hash is stable).
    pub fn manifest(&self) -> CapabilityManifest {
        CapabilityManifest {
            version: 1,
            tools: self
                .tools
                .values()
                .map(|t| ManifestTool {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    risk: t.risk.clone(),
                    timeout_seconds: t.timeout.as_secs(),
                    args_schema: t.args_schema.clone(),
                })
                .collect(),
            workspaces: self
                .workspaces
                .values()
                .map(|w| ManifestWorkspace {
                    id: w.id.clone(),
                    kind: w.kind.clone(),
                    credentials_ref: Some(w.credentials_ref.clone()),
                })
                .collect(),
        }
    }
}

/// Refuses a YAML file before parsing it when it is too large or has too many flow collections
/// to be a tool definition (see [`MAX_YAML_FLOW_COLLECTIONS`]).
fn check_yaml_size(text: &str) -> Result<(), String> {
    if text.len() > MAX_YAML_BYTES {
        return Err(format!("larger than {MAX_YAML_BYTES} bytes"));
    }
    let flow = text.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    if flow > MAX_YAML_FLOW_COLLECTIONS {
        return Err(format!(
            "more than {MAX_YAML_FLOW_COLLECTIONS} '[' or '{{' (flow collections)"
        ));
    }
    Ok(())
}

/// A `tool.yaml` parsed and checked, before its command is resolved inside the bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    pub risk: String,
    pub timeout: Duration,
    /// As written: a path relative to the bundle directory, not yet checked on disk.
    pub command: String,
    pub args_schema: serde_json::Value,
    pub limits: Limits,
    pub sandbox: SandboxSettings,
}

/// Parses and validates the text of a `tool.yaml` found in the directory `dir_name`: everything
/// [`Catalog::load`] checks except the command's file on disk. The error is the message only.
pub fn parse_tool_definition(text: &str, dir_name: &str) -> Result<ToolDefinition, String> {
    check_yaml_size(text)?;
    let file: ToolFile = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    if !valid_name(&file.name) {
        return Err(format!("tool name {:?} must match [a-z0-9][a-z0-9._-]{{0,63}}", file.name));
    }
    if file.name != dir_name {
        return Err(format!(
            "tool name {:?} must equal its directory name {dir_name:?}",
            file.name
        ));
    }
    if !RISKS.contains(&file.risk.as_str()) {
        return Err(format!("risk {:?} must be one of {}", file.risk, RISKS.join(", ")));
    }
    if !(1..=MAX_TIMEOUT_SECONDS).contains(&file.timeout_seconds) {
        return Err(format!("timeout_seconds must be 1..={MAX_TIMEOUT_SECONDS}"));
    }
    schema::check_schema(&file.args_schema).map_err(|e| format!("args_schema: {e}"))?;
    let limits = file.limits.resolve()?;
    if let Some(path) = file.sandbox.read_paths.iter().find(|p| !p.is_absolute()) {
        return Err(format!("sandbox.read_paths: {} must be an absolute path", path.display()));
    }
    Ok(ToolDefinition {
        name: file.name,
        description: file.description,
        risk: file.risk,
        timeout: Duration::from_secs(file.timeout_seconds),
        command: file.command,
        args_schema: file.args_schema,
        limits,
        sandbox: file.sandbox,
    })
}

fn load_tool(dir: &Path) -> Result<ToolBundle, CatalogError> {
    let path = dir.join(TOOL_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
    let dir_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tool = parse_tool_definition(&text, &dir_name).map_err(|m| invalid(&path, m))?;
    let executable = resolve_command(dir, &path, &tool.command)?;
    Ok(ToolBundle {
        name: tool.name,
        description: tool.description,
        risk: tool.risk,
        timeout: tool.timeout,
        executable,
        args_schema: tool.args_schema,
        limits: tool.limits,
        sandbox: tool.sandbox,
    })
}

/// The bundle's executable: relative, inside the bundle, a regular executable file.
fn resolve_command(dir: &Path, tool_file: &Path, command: &str) -> Result<PathBuf, CatalogError> {
    let relative = Path::new(command);
    let escapes = relative.is_absolute()
        || relative.components().any(|c| !matches!(c, std::path::Component::Normal(_)));
    if command.is_empty() || escapes {
        return Err(invalid(
            tool_file,
            format!("command {command:?} must be a path inside the bundle"),
        ));
    }
    let bundle = dir.canonicalize().map_err(io_error(dir))?;
    let joined = bundle.join(relative);
    let executable = joined.canonicalize().map_err(io_error(&joined))?;
    if !executable.starts_with(&bundle) {
        return Err(invalid(tool_file, format!("command {command:?} leads outside the bundle")));
    }
    let meta = std::fs::metadata(&executable).map_err(io_error(&executable))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(invalid(tool_file, format!("command {command:?} is not an executable file")));
    }
    Ok(executable)
}

fn load_workspaces(path: &Path) -> Result<BTreeMap<String, WorkspaceDecl>, CatalogError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    parse_workspaces(&text).map_err(|m| invalid(path, m))
}

/// Parses and validates the text of a `workspaces.yaml`. The error is the message only.
pub fn parse_workspaces(text: &str) -> Result<BTreeMap<String, WorkspaceDecl>, String> {
    check_yaml_size(text)?;
    let file: WorkspacesFile = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let mut workspaces = BTreeMap::new();
    for entry in file.workspaces {
        if !valid_name(&entry.id) {
            return Err(format!(
                "workspace id {:?} must match [a-z0-9][a-z0-9._-]{{0,63}}",
                entry.id
            ));
        }
        if entry.kind.is_empty()
            || !entry.kind.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "workspace {:?}: type {:?} must match [a-z0-9-]+",
                entry.id, entry.kind
            ));
        }
        // Local config, but still a name the XEM opens: it must not reach outside
        // credentials_dir (the store refuses such a name again when it reads).
        if !is_plain_file_name(&entry.credentials_ref) {
            return Err(format!(
                "workspace {:?}: credentials_ref {:?} must be a plain file name under \
                 credentials_dir (no '/', not '.' or '..', not hidden)",
                entry.id, entry.credentials_ref
            ));
        }
        let id = entry.id.clone();
        let declared = WorkspaceDecl {
            id: entry.id,
            kind: entry.kind,
            credentials_ref: entry.credentials_ref,
        };
        if workspaces.insert(id.clone(), declared).is_some() {
            return Err(format!("workspace {id:?} is declared twice"));
        }
    }
    Ok(workspaces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(root: &Path, name: &str, yaml: &str) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tool.yaml"), yaml).unwrap();
        let script = dir.join("run.sh");
        std::fs::write(&script, "#!/bin/sh\necho ok\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    const GOOD: &str = "name: noop\nrisk: read\ntimeout_seconds: 5\ncommand: run.sh\nargs_schema: {type: object}\n";

    fn error_of(yaml: &str) -> String {
        let root = tempfile::tempdir().unwrap();
        bundle(root.path(), "noop", yaml);
        Catalog::load(root.path()).unwrap_err().to_string()
    }

    #[test]
    fn the_example_bundles_load() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/tools");
        let catalog = Catalog::load(&examples).unwrap();
        for tool in ["kubectl-get", "noop", "sleep"] {
            assert!(catalog.tool(tool).is_some(), "{tool}");
        }
        assert_eq!(catalog.credential_refs(), vec!["kubernetes-prod.yaml".to_string()]);
        let manifest = catalog.manifest();
        assert_eq!(manifest.workspaces[0].kind, "kubernetes");
        assert_eq!(manifest.hash(), Catalog::load(&examples).unwrap().manifest().hash());
    }

    #[test]
    fn a_tool_definition_and_workspaces_parse_from_text_alone() {
        let tool = parse_tool_definition(GOOD, "noop").unwrap();
        assert_eq!(
            (tool.name.as_str(), tool.command.as_str(), tool.timeout),
            ("noop", "run.sh", Duration::from_secs(5))
        );
        assert!(parse_tool_definition(GOOD, "other").unwrap_err().contains("directory name"));
        assert!(parse_workspaces("workspaces: []\n").unwrap().is_empty());
        let err = parse_workspaces("workspaces:\n  - {id: Prod, type: k8s, credentials_ref: p}\n");
        assert!(err.unwrap_err().contains("workspace id"));
    }

    #[test]
    fn deeply_nested_or_huge_yaml_is_refused_before_parsing() {
        // Found by probing the `manifest_and_schema` fuzz target (fuzz/) with deep inputs:
        // 40 KiB of nested `[` took 30 s in the fuzz build (the scanner is quadratic in the depth).
        let deep =
            |n: usize| format!("name: noop\nargs_schema: {}{}\n", "[".repeat(n), "]".repeat(n));
        for text in [deep(30_000), deep(MAX_YAML_FLOW_COLLECTIONS + 1)] {
            let err = parse_tool_definition(&text, "noop").unwrap_err();
            assert!(err.contains("flow collections"), "{err}");
            assert!(parse_workspaces(&text).unwrap_err().contains("flow collections"));
        }
        let huge = format!("{GOOD}description: {}\n", "x".repeat(MAX_YAML_BYTES));
        assert!(parse_tool_definition(&huge, "noop").unwrap_err().contains("larger than"));
        // Up to the limit, nesting is the parser's business (it has its own recursion limit).
        let err = parse_tool_definition(&deep(MAX_YAML_FLOW_COLLECTIONS), "noop").unwrap_err();
        assert!(!err.contains("flow collections"), "{err}");
        assert!(error_of(&deep(60_000)).contains("tool.yaml"), "the file is named");
    }

    #[test]
    fn a_good_bundle_and_workspaces_load() {
        let root = tempfile::tempdir().unwrap();
        bundle(root.path(), "noop", GOOD);
        std::fs::write(
            root.path().join("workspaces.yaml"),
            "workspaces:\n  - {id: prod, type: kubernetes, credentials_ref: prod.yaml}\n  - {id: lab, type: aws, credentials_ref: prod.yaml}\n",
        )
        .unwrap();
        std::fs::write(root.path().join("README.md"), "notes").unwrap();
        let catalog = Catalog::load(root.path()).unwrap();
        let tool = catalog.tool("noop").unwrap();
        assert!(tool.executable.is_absolute() && tool.executable.ends_with("noop/run.sh"));
        assert_eq!(tool.timeout, Duration::from_secs(5));
        assert_eq!(catalog.credential_refs(), vec!["prod.yaml".to_string()]);
    }

    #[test]
    fn bad_bundles_are_refused_with_the_file_named() {
        assert!(error_of(&GOOD.replace("risk: read", "risk: spicy")).contains("risk \"spicy\""));
        assert!(error_of(&GOOD.replace("name: noop", "name: other")).contains("directory name"));
        assert!(
            error_of(&GOOD.replace("timeout_seconds: 5", "timeout_seconds: 0"))
                .contains("timeout_seconds")
        );
        assert!(error_of(&GOOD.replace("run.sh", "../run.sh")).contains("inside the bundle"));
        assert!(error_of(&GOOD.replace("run.sh", "/bin/sh")).contains("inside the bundle"));
        assert!(
            error_of(
                &GOOD.replace("{type: object}", "{type: object, properties: {x: {pattern: a}}}")
            )
            .contains("pattern")
        );
        assert!(error_of(&format!("{GOOD}extra: 1\n")).contains("extra"));
        let err = error_of(GOOD.replace("command: run.sh", "command: missing.sh").as_str());
        assert!(err.contains("missing.sh"), "{err}");
        assert!(err.contains("noop"), "the bundle is named: {err}");
    }

    #[test]
    fn a_non_executable_command_and_bad_workspaces_are_refused() {
        let root = tempfile::tempdir().unwrap();
        bundle(root.path(), "noop", GOOD);
        let script = root.path().join("noop/run.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Catalog::load(root.path()).unwrap_err().to_string().contains("not an executable"));
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (yaml, expected) in [
            (
                "workspaces:\n  - {id: prod, type: k8s, credentials_ref: ../etc/shadow}\n",
                "plain file name",
            ),
            (
                "workspaces:\n  - {id: prod, type: k8s, credentials_ref: .hidden}\n",
                "plain file name",
            ),
            ("workspaces:\n  - {id: prod, type: k8s, credentials_ref: '..'}\n", "plain file name"),
            ("workspaces:\n  - {id: prod, type: k8s, credentials_ref: '.'}\n", "plain file name"),
            ("workspaces:\n  - {id: prod, type: k8s, credentials_ref: a/b}\n", "plain file name"),
            ("workspaces:\n  - {id: prod, type: k8s, credentials_ref: ''}\n", "plain file name"),
            ("workspaces:\n  - {id: Prod, type: k8s, credentials_ref: p}\n", "workspace id"),
            (
                "workspaces:\n  - {id: p, type: k8s, credentials_ref: a}\n  - {id: p, type: k8s, credentials_ref: b}\n",
                "twice",
            ),
            ("workspaces:\n  - {id: p, kind: k8s, credentials_ref: a}\n", "kind"),
        ] {
            std::fs::write(root.path().join("workspaces.yaml"), yaml).unwrap();
            let err = Catalog::load(root.path()).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("workspaces.yaml"), "{yaml}: {err}");
        }
        assert!(matches!(
            Catalog::load(&root.path().join("nope")),
            Err(CatalogError::MissingDir(_))
        ));
    }
}
