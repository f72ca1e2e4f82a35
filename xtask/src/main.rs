//! `cargo xtask wasm`: builds the release component at `target/status-push.wasm`, its relay
//! world at `target/status-push-relay.wasm`, the same two on WASI 0.3 at
//! `target/status-push-p3.wasm` and `target/status-push-relay-p3.wasm`, and the sandbox
//! tests' hostile component at `target/test-components/misbehaving.wasm`.
//!
//! The core module is compiled for `wasm32-unknown-unknown`, whose std links no wasi-libc,
//! so the module imports exactly what the WIT world names; `wit-component` then wraps it
//! into a component using the WIT embedded by wit-bindgen.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const TARGET: &str = "wasm32-unknown-unknown";
/// The size-tuned profile in the workspace's Cargo.toml.
const PROFILE: &str = "wasm-release";
/// The WASI 0.3 builds' profile: `PROFILE` at `opt-level = "s"`, to stay under 1 MiB.
const PROFILE_P3: &str = "wasm-release-p3";

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "wasm" => {
            build_component(PROFILE, "status-push", &[], "status_push", "status-push.wasm")?;
            build_component(
                PROFILE,
                "status-push",
                &["--features", "relay"],
                "status_push",
                "status-push-relay.wasm",
            )?;
            // The same crate on WASI 0.3 (`wit/p3/`), both worlds.
            build_component(
                PROFILE_P3,
                "status-push",
                &["--features", "p3"],
                "status_push",
                "status-push-p3.wasm",
            )?;
            build_component(
                PROFILE_P3,
                "status-push",
                &["--features", "p3,relay"],
                "status_push",
                "status-push-relay-p3.wasm",
            )?;
            build_component(
                PROFILE,
                "misbehaving-component",
                &[],
                "misbehaving_component",
                "test-components/misbehaving.wasm",
            )
        }
        "sizes" => sizes(),
        _ => bail!(
            "usage: cargo xtask wasm    builds target/status-push.wasm (and the relay, both on WASI 0.3, test component)\n       \
             cargo xtask sizes   the component's code size per crate"
        ),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Builds `package` for the wasm target in `profile` and wraps its module into
/// `target/<output>`.
fn build_component(
    profile: &str,
    package: &str,
    features: &[&str],
    module: &str,
    output: &str,
) -> Result<()> {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--profile",
            profile,
            "--package",
            package,
            "--lib",
            "--target",
            TARGET,
        ])
        .args(features)
        .status()
        .context("running cargo build for the component")?;
    if !status.success() {
        bail!("cargo build for {TARGET} failed");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let core = target_dir
        .join(TARGET)
        .join(profile)
        .join(format!("{module}.wasm"));
    let module = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .context("reading the core module's WIT metadata")?
        .validate(true)
        .encode()
        .context("encoding the component")?;
    let component = without_component_names(&component)?;
    let out = target_dir.join(output);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, &component).with_context(|| format!("writing {}", out.display()))?;
    println!("{} ({} bytes)", out.display(), component.len());
    Ok(())
}

/// `component` without its top-level `component-name` section. wit-component always
/// writes one (names of the component's instances, functions and types, 8.9 KB in the
/// relay), which only a disassembler reads: wasmtime (48 embedded, 49's `serve`) and jco
/// run the component the same without it, and the release build's core module is
/// stripped of its names already. Every other section is copied byte for byte, and the
/// result validated again.
fn without_component_names(component: &[u8]) -> Result<Vec<u8>> {
    use wasmparser::{Chunk, Parser, Payload};
    let mut parser = Parser::new(0);
    let mut kept = Vec::with_capacity(component.len());
    let mut at = 0;
    loop {
        let Chunk::Parsed { consumed, payload } = parser.parse(&component[at..], true)? else {
            bail!("the encoded component ends early");
        };
        let section = &component[at..at + consumed];
        at += consumed;
        match payload {
            Payload::CustomSection(names) if names.name() == "component-name" => {}
            // A nested module or component: `consumed` is its header, and the parser has
            // stepped over its body, which is copied as it is.
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => {
                let end = usize::try_from(unchecked_range.end)?;
                kept.extend_from_slice(section);
                kept.extend_from_slice(&component[at..end]);
                at = end;
            }
            Payload::End(_) => {
                kept.extend_from_slice(section);
                break;
            }
            _ => kept.extend_from_slice(section),
        }
    }
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&kept)
        .context("validating the component without its names")?;
    Ok(kept)
}

/// Builds the component with symbol names kept and prints its code size per crate (from
/// the `name` section), largest first, with the stripped release size for reference.
fn sizes() -> Result<()> {
    let root = workspace_root();
    let target_dir = root.join("target/sizes");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .env("CARGO_PROFILE_WASM_RELEASE_STRIP", "false")
        .env("CARGO_PROFILE_WASM_RELEASE_DEBUG", "false")
        .args([
            "build",
            "--profile",
            PROFILE,
            "--package",
            "status-push",
            "--lib",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .status()?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let module = std::fs::read(
        target_dir
            .join(TARGET)
            .join(PROFILE)
            .join("status_push.wasm"),
    )?;
    let mut bodies = Vec::new();
    let mut names = std::collections::HashMap::new();
    let mut imported = 0u32;
    for payload in wasmparser::Parser::new(0).parse_all(&module) {
        match payload? {
            wasmparser::Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    if matches!(import?.ty, wasmparser::TypeRef::Func(_)) {
                        imported += 1;
                    }
                }
            }
            wasmparser::Payload::CodeSectionEntry(body) => {
                bodies.push((body.range().end - body.range().start) as usize)
            }
            wasmparser::Payload::CustomSection(section) if section.name() == "name" => {
                if let wasmparser::KnownCustom::Name(reader) = section.as_known() {
                    for name in reader {
                        if let wasmparser::Name::Function(map) = name? {
                            for naming in map {
                                let naming = naming?;
                                names.insert(naming.index, naming.name.to_string());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let mut per_crate: std::collections::BTreeMap<String, usize> = Default::default();
    for (i, size) in bodies.iter().enumerate() {
        let name = names
            .get(&(i as u32 + imported))
            .cloned()
            .unwrap_or_default();
        let demangled = format!("{:#}", rustc_demangle::demangle(&name));
        let krate = crate_of(&demangled);
        *per_crate.entry(krate).or_default() += size;
    }
    let mut rows: Vec<_> = per_crate.into_iter().collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.1));
    let code: usize = bodies.iter().sum();
    println!("code section: {code} bytes in {} functions", bodies.len());
    for (krate, size) in rows {
        println!(
            "{size:>9}  {:>5.1}%  {krate}",
            size as f64 * 100.0 / code as f64
        );
    }
    Ok(())
}

/// The crate a demangled symbol belongs to: its first path segment, looking inside
/// `<T as Trait>` to the implementing type.
fn crate_of(symbol: &str) -> String {
    let symbol = symbol
        .trim_start_matches('<')
        .trim_start_matches('&')
        .trim_start_matches("mut ");
    let first = symbol.split("::").next().unwrap_or(symbol);
    let first = first
        .split([' ', '<', '>', '(', '['])
        .next()
        .unwrap_or(first);
    if first.is_empty() {
        "(other)".into()
    } else {
        first.to_string()
    }
}
