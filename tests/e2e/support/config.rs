//! TOML fragments in the shape of DESIGN.md's configuration contract.
//!
//! A test's configuration is these fragments concatenated in file order: `service`, its `listener`, the
//! listener's `rule`s, then `target_group`s. Every listener binds 127.0.0.1, every target group has
//! active health checks off (probing is not what these tests are about).

/// Quotes a string as a TOML basic string.
pub fn quote(s: &str) -> String {
    format!("{s:?}")
}

fn list(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// `[[service]]` with its name and hosts.
pub fn service(name: &str, hosts: &[&str]) -> String {
    format!(
        "[[service]]\nname = {}\nhosts = {}\n\n",
        quote(name),
        list(hosts)
    )
}

/// Like [`service`], with extra `key = value` lines (e.g. [`rate_limit`]).
pub fn service_with(name: &str, hosts: &[&str], extra: &str) -> String {
    format!(
        "[[service]]\nname = {}\nhosts = {}\n{extra}\n",
        quote(name),
        list(hosts)
    )
}

/// `rate_limit = { requests_per_second, burst, key }`, a line for [`service_with`] or [`rule_with`].
pub fn rate_limit(requests_per_second: f64, burst: u32, key: &str) -> String {
    format!(
        "rate_limit = {{ requests_per_second = {requests_per_second:?}, burst = {burst}, key = {} }}\n",
        quote(key)
    )
}

/// `[[service.listener]]` named `web`, plain HTTP on 127.0.0.1:`port`.
pub fn listener(port: u16, default_action: &str) -> String {
    listener_with(port, default_action, "")
}

/// Like [`listener`], with extra `key = value` lines (e.g. `limits = { header_timeout = "500ms" }`).
pub fn listener_with(port: u16, default_action: &str, extra: &str) -> String {
    format!(
        "[[service.listener]]\nname = \"web\"\nprotocol = \"http\"\nport = {port}\nbind = \"127.0.0.1\"\n\
         default_action = {default_action}\n{extra}\n"
    )
}

/// `[[service.listener.rule]]`; `matches` is the inline table after `match =`.
pub fn rule(name: &str, priority: u16, matches: &str, action: &str) -> String {
    format!(
        "[[service.listener.rule]]\nname = {}\npriority = {priority}\nmatch = {matches}\naction = {action}\n\n",
        quote(name)
    )
}

/// Like [`rule`], with extra `key = value` lines (e.g. [`rate_limit`]).
pub fn rule_with(name: &str, priority: u16, matches: &str, action: &str, extra: &str) -> String {
    format!(
        "[[service.listener.rule]]\nname = {}\npriority = {priority}\nmatch = {matches}\naction = {action}\n{extra}\n",
        quote(name)
    )
}

/// `{ forward = [{ target_group = "a", weight = 90 }, ...] }`.
pub fn forward(groups: &[(&str, u16)]) -> String {
    let parts: Vec<String> = groups
        .iter()
        .map(|(tg, w)| format!("{{ target_group = {}, weight = {w} }}", quote(tg)))
        .collect();
    format!("{{ forward = [{}] }}", parts.join(", "))
}

/// Forward everything to one target group.
pub fn forward_to(target_group: &str) -> String {
    format!(
        "{{ forward = [{{ target_group = {} }}] }}",
        quote(target_group)
    )
}

/// `{ fixed_response = { status, body } }` (content type left to its default).
pub fn fixed(status: u16, body: &str) -> String {
    format!(
        "{{ fixed_response = {{ status = {status}, body = {} }} }}",
        quote(body)
    )
}

/// `["127.0.0.1:A", "127.0.0.1:B"]`.
pub fn targets(addrs: &[String]) -> String {
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    list(&refs)
}

/// `[[target_group]]` with the given `targets = ...` value and health checks off.
pub fn target_group(name: &str, targets: &str) -> String {
    target_group_with(name, targets, "")
}

/// Like [`target_group`], with extra `key = value` lines (`algorithm`, `response_timeout`, ...).
pub fn target_group_with(name: &str, targets: &str, extra: &str) -> String {
    format!(
        "[[target_group]]\nname = {}\ntargets = {targets}\n{extra}\n\
         [target_group.health_check]\nenabled = false\n\n",
        quote(name)
    )
}

/// `[[target_group]]` with active health checks on: `check` holds the `[target_group.health_check]`
/// lines (`interval = "200ms"`, ...), `extra` more group keys and tables (e.g. outlier detection).
pub fn checked_target_group(name: &str, targets: &str, check: &str, extra: &str) -> String {
    format!(
        "[[target_group]]\nname = {}\ntargets = {targets}\n{extra}\n\
         [target_group.health_check]\nenabled = true\n{check}\n\n",
        quote(name)
    )
}

/// The bearer token [`admin_with_token`] sets.
pub const ADMIN_TOKEN: &str = "s3cret";

/// An `[admin]` table listening on `listen` that wants the bearer token [`ADMIN_TOKEN`], kept in
/// `dir/admin-token`: the table (to put first in the file) and the token file.
pub fn admin_with_token(dir: &std::path::Path, listen: &str) -> (String, std::path::PathBuf) {
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).expect("write the token file");
    let table = format!(
        "[admin]\nlisten = \"{listen}\"\ntoken_file = {}\n\n",
        quote(&token_file.display().to_string())
    );
    (table, token_file)
}
