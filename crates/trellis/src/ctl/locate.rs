//! Finding the admin API of the running trellis and the token it wants: the flags first, then the
//! configuration file's `[admin]` table, then the defaults `trellis run` uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;

use super::client::{Client, Endpoint, Origin};

/// Where `-c` points unless told otherwise: the same default as `trellis run`.
const DEFAULT_CONFIG: &str = "/etc/trellis/trellis.toml";

/// How to reach the admin API of a running trellis.
#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The admin API, as http://HOST:PORT or HOST:PORT [default: admin.listen of --config, else
    /// 127.0.0.1:9901].
    #[arg(long, value_name = "URL", value_parser = Endpoint::parse)]
    admin: Option<Endpoint>,
    /// The configuration of the running trellis: its [admin] table says where the admin API listens
    /// and which token it wants.
    #[arg(short, long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// A file holding the admin API's bearer token [default: admin.token_file of --config].
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// What the configuration file says about the admin API.
#[derive(Debug, Default, PartialEq)]
struct AdminTable {
    listen: Option<SocketAddr>,
    token_file: Option<PathBuf>,
}

pub fn client(args: &AdminArgs) -> anyhow::Result<Client> {
    let table = if args.admin.is_none() || args.token_file.is_none() {
        admin_table(&args.config)
    } else {
        AdminTable::default()
    };
    let (endpoint, origin) = match (&args.admin, table.listen) {
        (Some(endpoint), _) => (endpoint.clone(), Origin::Flag),
        (None, Some(listen)) => (
            Endpoint::from_listen(listen),
            Origin::Config(args.config.clone()),
        ),
        (None, None) => (Endpoint::default(), Origin::Default),
    };
    let token_file = args.token_file.clone().or(table.token_file);
    let token = token_file.as_deref().map(read_token).transpose()?;
    Ok(Client {
        endpoint,
        origin,
        token,
    })
}

/// The `[admin]` table of `path`. A file that does not validate still names its admin API: it is
/// typically the one just edited, about to be reloaded, and the daemon's reply will list its errors.
/// A file that cannot be read is no reason to stop (the flags and defaults may be all it takes), but
/// worth a word unless it is the default file that is absent.
fn admin_table(path: &Path) -> AdminTable {
    let error = match trellis_config::load(path) {
        Ok(config) => {
            return AdminTable {
                listen: Some(config.admin.listen),
                token_file: config.admin.token_file,
            }
        }
        Err(trellis_config::ConfigError::Invalid(errors)) => {
            if let Some(table) = std::fs::read_to_string(path)
                .ok()
                .and_then(|text| lenient_admin_table(&text, path))
            {
                return table;
            }
            errors.first().map(|e| e.to_string()).unwrap_or_default()
        }
        Err(trellis_config::ConfigError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound
                && path == Path::new(DEFAULT_CONFIG) =>
        {
            return AdminTable::default()
        }
        Err(e) => e.to_string(),
    };
    eprintln!(
        "trellis: warning: not using {} for the admin address and token: {error}",
        path.display()
    );
    AdminTable::default()
}

/// `admin.listen` and `admin.token_file` read as the configuration crate reads them (a relative token
/// path is beside the file), ignoring the rest of the file; `None` if they cannot be read.
fn lenient_admin_table(text: &str, path: &Path) -> Option<AdminTable> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let Some(admin) = doc.get("admin") else {
        return Some(AdminTable::default());
    };
    let listen = match admin.get("listen") {
        None => None,
        Some(item) => Some(item.as_str()?.parse::<SocketAddr>().ok()?),
    };
    let token_file = match admin.get("token_file") {
        None => None,
        Some(item) => {
            let file = Path::new(item.as_str()?);
            Some(path.parent().unwrap_or(Path::new("")).join(file))
        }
    };
    Some(AdminTable { listen, token_file })
}

fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the admin token from {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the admin token file {} is empty", path.display());
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_file_still_names_its_admin_api() {
        let path = Path::new("/etc/trellis/trellis.toml");
        let text = "[admin]\nlisten = \"0.0.0.0:9902\"\ntoken_file = \"admin-token\"\n\n\
                    [[service]]\nname = 42\n";
        assert_eq!(
            lenient_admin_table(text, path),
            Some(AdminTable {
                listen: Some("0.0.0.0:9902".parse().unwrap()),
                token_file: Some(PathBuf::from("/etc/trellis/admin-token")),
            })
        );
        let absolute = "[admin]\ntoken_file = \"/run/secrets/admin\"\n";
        assert_eq!(
            lenient_admin_table(absolute, path).and_then(|t| t.token_file),
            Some(PathBuf::from("/run/secrets/admin"))
        );
        assert_eq!(
            lenient_admin_table("[[service]]\n", path),
            Some(AdminTable::default())
        );
        assert_eq!(
            lenient_admin_table("[admin]\nlisten = \"nowhere\"\n", path),
            None
        );
        assert_eq!(lenient_admin_table("[admin\n", path), None);
    }
}
