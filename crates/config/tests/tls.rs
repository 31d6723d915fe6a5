//! Listener TLS: certificate, key and client CA files are read and checked when the file is parsed, and
//! every problem names the file and the key.

use std::path::Path;

use trellis_config::{parse, ClientAuth, ConfigError};

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    /// `certs/site.pem` + `certs/site.key` (a pair), `certs/other.key` (another key), `certs/ca.pem`.
    fn new() -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("certs")).unwrap();
        let site = rcgen::generate_simple_self_signed(vec!["shop.internal".into()]).unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca.internal".into()]).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        write("certs/site.pem", site.cert.pem());
        write("certs/site.key", site.key_pair.serialize_pem());
        write("certs/other.key", other.serialize_pem());
        write("certs/ca.pem", ca.cert.pem());
        write("certs/empty.pem", String::new());
        Files { dir }
    }

    fn config(&self, tls: &str) -> String {
        format!(
            "[[service]]\nname = \"s\"\nhosts = [\"*\"]\n  [[service.listener]]\n  name = \"web\"\n  protocol = \"https\"\n  port = 8443\n  tls = {tls}\n  default_action = {{ fixed_response = {{ status = 200 }} }}\n"
        )
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("trellis.toml")
    }

    fn errors(&self, tls: &str) -> Vec<String> {
        match parse(&self.config(tls), &self.path()) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(d)) => d.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[track_caller]
    fn expect(&self, tls: &str, key: &str, message: &str) {
        let errors = self.errors(tls);
        let prefix = format!(
            "{}:8: service[0].listener[0].tls.{key}: ",
            self.path().display()
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&prefix) && e.contains(message)),
            "no `{prefix}…{message}…` in {errors:#?}"
        );
    }
}

#[test]
fn relative_paths_are_read_and_the_pair_checked() {
    let f = Files::new();
    let c = parse(
        &f.config("{ cert = \"certs/site.pem\", key = \"certs/site.key\" }"),
        &f.path(),
    )
    .unwrap();
    let tls = c.services[0].listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.cert, f.dir.path().join("certs/site.pem"));
    assert_eq!(tls.key, f.dir.path().join("certs/site.key"));
    assert_eq!(tls.client_auth, None);
    let material = tls.material.as_ref().unwrap();
    assert_eq!(material.certified.cert.len(), 1);
    assert!(material.client_roots.is_none());
}

#[test]
fn client_ca_and_client_auth() {
    let f = Files::new();
    let with = |auth: &str| {
        parse(
            &f.config(&format!(
                "{{ cert = \"certs/site.pem\", key = \"certs/site.key\", client_ca = \"certs/ca.pem\"{auth} }}"
            )),
            &f.path(),
        )
        .unwrap()
    };
    let required = with("");
    let tls = required.services[0].listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.client_auth, Some(ClientAuth::Required));
    assert_eq!(
        tls.material
            .as_ref()
            .unwrap()
            .client_roots
            .as_ref()
            .unwrap()
            .len(),
        1
    );
    let optional = with(", client_auth = \"optional\"");
    assert_eq!(
        optional.services[0].listeners[0]
            .tls
            .as_ref()
            .unwrap()
            .client_auth,
        Some(ClientAuth::Optional)
    );
    f.expect(
        "{ cert = \"certs/site.pem\", key = \"certs/site.key\", client_auth = \"required\" }",
        "client_auth",
        "client_auth needs client_ca",
    );
    f.expect(
        "{ cert = \"certs/site.pem\", key = \"certs/site.key\", client_ca = \"certs/ca.pem\", client_auth = \"maybe\" }",
        "client_auth",
        "\"maybe\" is not one of \"required\", \"optional\"",
    );
}

#[test]
fn every_file_problem_names_the_file() {
    let f = Files::new();
    let dir = f.dir.path().display();
    f.expect(
        "{ cert = \"certs/missing.pem\", key = \"certs/site.key\" }",
        "cert",
        &format!("cannot read {dir}/certs/missing.pem"),
    );
    f.expect(
        "{ cert = \"certs/empty.pem\", key = \"certs/site.key\" }",
        "cert",
        &format!("{dir}/certs/empty.pem holds no PEM certificate"),
    );
    f.expect(
        "{ cert = \"certs/site.pem\", key = \"certs/site.pem\" }",
        "key",
        &format!("{dir}/certs/site.pem holds no usable PEM private key"),
    );
    f.expect(
        "{ cert = \"certs/site.pem\", key = \"certs/other.key\" }",
        "key",
        &format!("{dir}/certs/other.key is not the key of the certificate in {dir}/certs/site.pem"),
    );
    f.expect(
        "{ cert = \"certs/site.pem\", key = \"certs/site.key\", client_ca = \"certs/empty.pem\" }",
        "client_ca",
        &format!("{dir}/certs/empty.pem holds no PEM certificate"),
    );
}

#[test]
fn a_rotated_certificate_is_a_changed_configuration() {
    let f = Files::new();
    let text = f.config("{ cert = \"certs/site.pem\", key = \"certs/site.key\" }");
    let before = parse(&text, &f.path()).unwrap();
    assert_eq!(before, parse(&text, &f.path()).unwrap());
    let next = rcgen::generate_simple_self_signed(vec!["shop.internal".into()]).unwrap();
    std::fs::write(f.dir.path().join("certs/site.pem"), next.cert.pem()).unwrap();
    std::fs::write(
        f.dir.path().join("certs/site.key"),
        next.key_pair.serialize_pem(),
    )
    .unwrap();
    assert_ne!(before, parse(&text, Path::new(&f.path())).unwrap());
}
