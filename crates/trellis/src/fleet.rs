//! `trellis fleet`: the fleet's shared configuration in etcd, and who serves it.

use std::path::Path;
use std::process::ExitCode;

/// `trellis fleet apply FILE`: validates FILE as `trellis check` does (and refuses node-local sections,
/// which belong in each node's file), then writes it as the fleet's configuration with one
/// compare-and-swap on the revision it read. Prints the new revision.
pub fn apply(file: &Path, store: &Connection) -> ExitCode {
    let prefix = &store.prefix;
    let (applied, config) = match validated(file) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let result = with_store(store, async |store| {
        let current = store.load().await?;
        store.apply(&applied, current.config_revision).await
    });
    match result {
        Ok(revision) => {
            println!(
                "applied {} to {prefix} at revision {revision}: {}",
                file.display(),
                config.summary()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trellis: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `trellis fleet status`: the applied configuration, every live node with the revision it serves and
/// its last contact, and each scaling group's owner.
pub fn status(store: &Connection, json: bool) -> ExitCode {
    let prefix = &store.prefix;
    let result = with_store(store, async |store| {
        Ok((
            store.load().await?,
            store.nodes().await?,
            store.owners().await?,
        ))
    });
    let (loaded, nodes, owners) = match result {
        Ok(found) => found,
        Err(e) => {
            eprintln!("trellis: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = trellis_fleet::now();
    if json {
        let value = serde_json::json!({
            "prefix": prefix,
            "revision": loaded.revision,
            "truth_revision": loaded.truth_revision,
            "config": loaded.config.as_ref().map(|c| serde_json::json!({
                "name": c.name,
                "revision": loaded.config_revision,
            })),
            "registrations": loaded.registrations.len(),
            "nodes": nodes.iter().map(|n| serde_json::json!({
                "node": n.node,
                "revision": n.revision,
                "stale": n.stale,
                "last_contact_seconds": now.saturating_sub(n.contact),
            })).collect::<Vec<_>>(),
            "owners": owners,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    match &loaded.config {
        Some(c) => println!(
            "fleet {prefix}: {} applied at revision {}; {} registered target{}; etcd at revision {}",
            c.name,
            loaded.config_revision,
            loaded.registrations.len(),
            if loaded.registrations.len() == 1 { "" } else { "s" },
            loaded.revision
        ),
        None => println!(
            "fleet {prefix}: no configuration applied yet (trellis fleet apply FILE); etcd at revision {}",
            loaded.revision
        ),
    }
    println!(
        "\n{:<24} {:>10}  {:<14} NOTE",
        "NODE", "REVISION", "LAST CONTACT"
    );
    for n in &nodes {
        let behind = if n.revision < loaded.truth_revision {
            "behind"
        } else {
            ""
        };
        let note = if n.stale {
            "serving its disk copy"
        } else {
            behind
        };
        println!(
            "{:<24} {:>10}  {:<14} {note}",
            n.node,
            n.revision,
            format!("{}s ago", now.saturating_sub(n.contact))
        );
    }
    if nodes.is_empty() {
        println!("(no node is running)");
    }
    let groups = loaded
        .config
        .as_ref()
        .and_then(|c| trellis_config::parse(&c.text, Path::new(&c.name)).ok())
        .map(|config| config.scaling_groups)
        .unwrap_or_default();
    if groups.is_empty() {
        println!("\nscaling groups: none");
    } else {
        println!("\n{:<24} OWNER", "SCALING GROUP");
        for g in &groups {
            let owner = owners
                .get(&g.name)
                .map_or("(none: electing)", String::as_str);
            println!("{:<24} {owner}", g.name);
        }
    }
    ExitCode::SUCCESS
}

/// Reads and validates FILE as the fleet's configuration (as `trellis check` does, node-local sections
/// refused), or prints every error.
fn validated(file: &Path) -> Result<(trellis_fleet::Applied, trellis_config::Config), ExitCode> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        eprintln!("{}: {e}", file.display());
        ExitCode::FAILURE
    })?;
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("{e}");
        ExitCode::FAILURE
    };
    // What a node brings itself (admin, access log, limits) is default here: the file must not have it.
    let node = trellis_config::parse("", file).map_err(|e| fail(&e))?;
    let config = trellis_config::parse_shared(&text, file, &node).map_err(|e| fail(&e))?;
    trellis_proxy::check_target_tls(&config).map_err(|e| fail(&e))?;
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok((trellis_fleet::Applied { name, text }, config))
}

/// Where the fleet's store is, and how to reach it.
pub struct Connection {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub tls: Option<trellis_config::FleetTls>,
}

/// Runs `op` against the fleet's store on a runtime of its own; the error as text.
fn with_store<T>(
    connection: &Connection,
    op: impl AsyncFnOnce(trellis_fleet::Store) -> Result<T, trellis_fleet::FleetError>,
) -> Result<T, String> {
    let rt = crate::runtime(Some(1)).map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store = trellis_fleet::Store::connect(
            &connection.endpoints,
            &connection.prefix,
            connection.tls.as_ref(),
        )
        .await?;
        op(store).await
    })
    .map_err(|e| e.to_string())
}

/// `trellis fleet import FILE`: a single-file deployment — its file and the targets registered in its
/// state directory — into an empty prefix, in one transaction.
pub fn import(file: &Path, state_dir: Option<&Path>, store: &Connection) -> ExitCode {
    let prefix = &store.prefix;
    let (applied, config) = match validated(file) {
        Ok(found) => found,
        Err(code) => return code,
    };
    let registrations = match state_dir {
        None => Vec::new(),
        Some(dir) => {
            let (registrations, problem) = crate::state::load_registrations(
                &crate::state::StateDir::choose(Some(dir.to_path_buf())),
            );
            if let Some(problem) = problem {
                eprintln!("trellis: {problem}");
                return ExitCode::FAILURE;
            }
            registrations
        }
    };
    let to_fleet: Vec<trellis_fleet::Registration> = registrations.iter().map(Into::into).collect();
    let groups = state_dir.map_or_else(Vec::new, |dir| imported_groups(&config, dir));
    let machines: usize = groups.iter().map(|g| g.instances.len()).sum();
    match with_store(store, async |store| {
        store.import(&applied, &to_fleet, &groups).await
    }) {
        Ok(revision) => {
            println!(
                "imported {}, {} registered target{} and {machines} machine{} of command-provider scaling groups into {prefix} at revision {revision}: {}",
                file.display(),
                to_fleet.len(),
                if to_fleet.len() == 1 { "" } else { "s" },
                if machines == 1 { "" } else { "s" },
                config.summary()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("trellis: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The scaler state a single-file deployment keeps: each command-provider group's machines (a process
/// provider's instances are the daemon's children and stop with it; the fleet launches its own). The
/// group starts at its configured desired capacity, as a restarted single node does, and numbers its next
/// instances after the imported ones.
fn imported_groups(
    config: &trellis_config::Config,
    dir: &Path,
) -> Vec<trellis_fleet::ImportedGroup> {
    let state = crate::state::StateDir::choose(Some(dir.to_path_buf()));
    let now_ms = trellis_fleet::now() * 1000;
    config
        .scaling_groups
        .iter()
        .filter(|g| matches!(g.launch, trellis_config::Launch::Command(_)))
        .filter_map(|g| {
            let machines = crate::scaling::load_machines(&state, &g.name);
            if machines.is_empty() {
                return None;
            }
            let next_id = machines
                .iter()
                .filter_map(|(name, _, _)| name.rsplit('-').next()?.parse::<u64>().ok())
                .max()
                .unwrap_or(0)
                + 1;
            let instances = machines
                .into_iter()
                .map(|(name, id, address)| trellis_fleet::InstanceRecord {
                    id: name,
                    node: "import".into(),
                    provider_id: Some(id),
                    address,
                    launched_at_ms: now_ms,
                    in_service_at_ms: None,
                    protected: false,
                    terminating: false,
                    launch: None,
                    admitted: false,
                    warm: false,
                })
                .collect::<Vec<_>>();
            let activity = trellis_fleet::ActivityRecord {
                at: trellis_fleet::now(),
                kind: "adopt".into(),
                description: format!(
                    "{} machine(s) imported from a single-file deployment",
                    instances.len()
                ),
                node: "import".into(),
            };
            Some(trellis_fleet::ImportedGroup {
                name: g.name.clone(),
                state: trellis_fleet::GroupState {
                    desired: g.desired.clamp(g.min, g.max),
                    min: g.min,
                    max: g.max,
                    next_id,
                    last_activity_ms: None,
                    requests_applied: 0,
                    activities: vec![activity],
                    refresh: None,
                },
                instances,
            })
        })
        .collect()
}

/// `trellis fleet export`: the fleet's configuration back to a file (stdout without `--out`), and its
/// registrations into a state directory, for a single-file deployment.
pub fn export(out: Option<&Path>, state_dir: Option<&Path>, store: &Connection) -> ExitCode {
    let prefix = &store.prefix;
    let loaded = match with_store(store, async |store| store.load().await) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("trellis: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(applied) = loaded.config else {
        eprintln!("trellis: no configuration has been applied to {prefix}");
        return ExitCode::FAILURE;
    };
    let written = match out {
        Some(path) => {
            std::fs::write(path, &applied.text).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => {
            print!("{}", applied.text);
            Ok(())
        }
    };
    if let Err(e) = written {
        eprintln!("trellis: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(dir) = state_dir {
        let registrations: Vec<crate::state::Registration> =
            loaded.registrations.iter().map(Into::into).collect();
        let dir = crate::state::StateDir::choose(Some(dir.to_path_buf()));
        if let Err(e) = crate::state::save_registrations(&dir, &registrations) {
            eprintln!("trellis: {}: {e}", dir.path().display());
            return ExitCode::FAILURE;
        }
        // The command provider's machines, for a single node to adopt.
        let config = trellis_config::parse(&applied.text, Path::new(&applied.name)).ok();
        let groups: Vec<String> = config
            .iter()
            .flat_map(|c| &c.scaling_groups)
            .filter(|g| matches!(g.launch, trellis_config::Launch::Command(_)))
            .map(|g| g.name.clone())
            .collect();
        for group in groups {
            let view = match with_store(store, async |store| store.group(&group).await) {
                Ok(view) => view,
                Err(e) => {
                    eprintln!("trellis: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let machines: Vec<crate::scaling::MachineRecord> = view
                .instances
                .iter()
                .filter(|r| !r.terminating)
                .filter_map(|r| Some((r.id.clone(), r.provider_id.clone()?, r.address)))
                .collect();
            if let Err(e) = crate::scaling::save_machines(&dir, &group, &machines) {
                eprintln!("trellis: {}: {e}", dir.path().display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
