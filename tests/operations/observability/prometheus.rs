//! A real Prometheus scraping a real gateway: `promtool` accepts the shipped config, rules and
//! rule tests, and every PromQL expression of the Grafana dashboard and every alert rule
//! evaluates to data.

use super::*;

/// A Prometheus server on a loopback port with its data in a temporary directory, scraping
/// one gateway every second with the shipped scrape job and alert rules; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// The shipped `grafana/prometheus/prometheus.yml`, with its gateway job pointed at
    /// `target`, every interval set to 1 s, the other jobs dropped and the rule file path made
    /// absolute.
    fn config_for(target: SocketAddr) -> String {
        let dir = repo().join("grafana/prometheus");
        let shipped = std::fs::read_to_string(dir.join("prometheus.yml")).unwrap();
        let mut c: serde_yaml::Value = serde_yaml::from_str(&shipped).unwrap();
        for key in ["scrape_interval", "scrape_timeout", "evaluation_interval"] {
            c["global"][key] = "1s".into();
        }
        let rules: Vec<serde_yaml::Value> = c["rule_files"]
            .as_sequence()
            .expect("prometheus.yml has rule_files")
            .iter()
            .map(|f| dir.join(f.as_str().unwrap()).display().to_string().into())
            .collect();
        assert!(!rules.is_empty(), "prometheus.yml loads no rule file");
        c["rule_files"] = rules.into();
        let jobs = c["scrape_configs"].as_sequence_mut().unwrap();
        jobs.retain(|j| j["job_name"] == JOB);
        assert_eq!(jobs.len(), 1, "prometheus.yml has no job `{JOB}`");
        jobs[0]["static_configs"] =
            serde_yaml::from_str(&format!("[{{targets: [\"{target}\"]}}]")).unwrap();
        serde_yaml::to_string(&c).unwrap()
    }

    fn start(target: SocketAddr) -> Prometheus {
        let bin = tool("prometheus", "apt-get install -y prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, Self::config_for(target)).unwrap();
        promtool_ok(&["check", "config"], &config);
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut p = Prometheus { child, addr, dir };
        let log = p.dir.path().join("prometheus.log");
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        wait_for(
            Duration::from_secs(60),
            "Prometheus to be ready",
            || {
                if let Ok(Some(status)) = p.child.try_wait() {
                    panic!("prometheus exited with {status}:\n{}", read_log());
                }
                (http_get(&format!("http://{addr}/-/ready")).0 == 200).then_some(())
            },
            read_log,
        );
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>` with URL-encoded parameters; the parsed JSON answer.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut cmd = curl();
        cmd.arg("-G");
        for (k, v) in params {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let out = cmd
            .arg(format!("http://{}/api/v1/{path}", self.addr))
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "Prometheus /api/v1/{path} {params:?}: {e}: {}",
                text(&out.stdout)
            )
        })
    }

    /// An instant query.
    fn query(&self, expr: &str) -> Value {
        self.api("query", &[("query", expr)])
    }

    /// The single value of a query that must return one sample, if it does.
    fn scalar(&self, expr: &str) -> Option<f64> {
        let r = self.query(expr);
        let v = r["data"]["result"].as_array()?.first()?["value"][1].as_str()?;
        v.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `promtool ARGS FILE` and fails the test with its output unless it succeeds.
fn promtool_ok(args: &[&str], file: &Path) {
    let promtool = tool("promtool", "apt-get install -y prometheus");
    let out = Command::new(promtool)
        .args(args)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {} {}:\n{}{}",
        args.join(" "),
        file.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn dashboard() -> Value {
    let path = repo().join("grafana/dashboards/slapenir.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel of the dashboard (rows' nested panels included) that has queries:
/// `(title, [expr...])`.
fn dashboard_queries(d: &Value) -> Vec<(String, Vec<String>)> {
    fn walk(panels: &Value, out: &mut Vec<(String, Vec<String>)>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], out);
            if let Some(targets) = p["targets"].as_array() {
                let title = p["title"].as_str().unwrap_or_default().to_string();
                let exprs = targets
                    .iter()
                    .map(|t| {
                        t["expr"]
                            .as_str()
                            .unwrap_or_else(|| panic!("panel {title}: a target has no expr"))
                            .to_string()
                    })
                    .collect();
                out.push((title, exprs));
            }
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// `expr` as Grafana would send it with every variable at "All": the dashboard's template
/// variables replaced by their `allValue`, Grafana's interval variables by fixed durations
/// (long enough to hold the test's traffic, short enough to leave out nothing of it).
fn substitute(d: &Value, expr: &str) -> String {
    let mut e = expr
        .replace("$__rate_interval", "2m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h");
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap();
        let all = v["allValue"]
            .as_str()
            .unwrap_or_else(|| panic!("template variable {name} has no allValue"));
        for form in [
            format!("${{{name}}}"),
            format!("[[{name}]]"),
            format!("${name}"),
        ] {
            e = e.replace(&form, all);
        }
    }
    assert!(
        !e.contains('$'),
        "unknown variable left in `{e}` (from `{expr}`)"
    );
    e
}

/// Every alert rule of alerts.yml: `(alert name, expr)`.
fn alert_rules() -> Vec<(String, String)> {
    let path = repo().join("grafana/prometheus/alerts.yml");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for g in rules["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            for key in ["summary", "description"] {
                assert!(
                    r["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "alert {name} has no {key} annotation"
                );
            }
            out.push((name.to_string(), r["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// Waits until Prometheus holds the gateway's current counts, and then for one more scrape,
/// so that every series has at least two samples; returns the gateway's `/metrics` text.
fn wait_scraped(prom: &Prometheus, s: &Stack) -> String {
    let final_metrics = s.metrics();
    for family in [
        "slapenir_requests_total",
        "slapenir_refusals_total",
        "slapenir_config_reloads_total",
        "slapenir_upstream_errors_total",
    ] {
        let want = family_sum(&final_metrics, family);
        assert!(want > 0.0, "{family} is still 0 after the traffic");
        let expr = format!("sum({family})");
        wait_for(
            Duration::from_secs(30),
            &format!("Prometheus to scrape {family} = {want}"),
            || (prom.scalar(&expr).is_some_and(|v| v >= want)).then_some(()),
            || format!("{}", prom.query(&expr)),
        );
    }
    let last_scrape = format!("timestamp(up{{job=\"{JOB}\"}})");
    let seen = prom.scalar(&last_scrape).unwrap();
    wait_for(
        Duration::from_secs(30),
        "one more scrape",
        || (prom.scalar(&last_scrape).is_some_and(|t| t > seen)).then_some(()),
        || format!("{}", prom.query(&last_scrape)),
    );
    final_metrics
}

/// A few more requests of the kinds every rate panel shows: a success with swaps both ways, a
/// refusal, an upstream error.
fn second_wave(s: &Stack) {
    let ok = agent(
        s,
        "api.test",
        &format!("/echo?key={DUMMY}"),
        &["--data-binary", &format!("again {DUMMY}")],
    );
    assert_eq!(ok.status, Some(200), "{ok:?}");
    assert_eq!(agent(s, "nowhere.test", "/", &[]).status, Some(403));
    assert_eq!(agent(s, "down.test", "/", &[]).status, Some(502));
}

/// The shipped Prometheus files pass promtool: the config, the rules, and the rules' unit
/// tests (each alert fires on the series it is meant for, with its annotations).
#[test]
fn promtool_accepts_the_shipped_config_rules_and_rule_tests() {
    let dir = repo().join("grafana/prometheus");
    promtool_ok(&["check", "config"], &dir.join("prometheus.yml"));
    promtool_ok(&["check", "rules"], &dir.join("alerts.yml"));
    promtool_ok(&["test", "rules"], &dir.join("alerts_test.yml"));
}

/// A real Prometheus scrapes a real gateway through every kind of request; then every
/// dashboard query returns data and every alert expression is valid, the alerts that this
/// traffic must raise return data, and Prometheus evaluates every rule without error.
#[test]
fn prometheus_evaluates_every_dashboard_query_and_alert_rule() {
    let s = Stack::start();
    let prom = Prometheus::start(s.gw.admin);
    let up = format!("up{{job=\"{JOB}\"}}");
    wait_for(
        Duration::from_secs(30),
        "Prometheus' first scrape of the gateway",
        || (prom.scalar(&up) == Some(1.0)).then_some(()),
        || format!("{}\n{}", prom.query(&up), prom.log()),
    );

    drive_every_kind(&s);

    // `rate` needs a series' samples on both sides of an increase: the series born during the
    // first wave are scraped, then a second wave increases them.
    wait_scraped(&prom, &s);
    second_wave(&s);
    let final_metrics = wait_scraped(&prom, &s);

    // Every metric family the gateway exports is shown somewhere on the dashboard.
    let d = dashboard();
    let panels = dashboard_queries(&d);
    let all_exprs: String = panels.iter().flat_map(|(_, e)| e.clone()).collect();
    let families: BTreeSet<&str> = final_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("slapenir_"))
        .collect();
    for family in &families {
        assert!(
            all_exprs.contains(family),
            "metric {family} is on no dashboard panel"
        );
    }

    // Every dashboard query is valid and returns data (at least one finite value).
    let mut failures = Vec::new();
    for (title, exprs) in &panels {
        for expr in exprs {
            let e = substitute(&d, expr);
            let r = prom.query(&e);
            let result = r["data"]["result"].as_array();
            let finite = result.into_iter().flatten().any(|sample| {
                sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            });
            if r["status"] != "success" || !finite {
                failures.push(format!("panel `{title}`: `{e}` -> {r}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "dashboard queries:\n{}",
        failures.join("\n")
    );

    // The template variable's values: label_values(metric, label) is a series query.
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"]["query"].as_str().unwrap();
        let (metric, label) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.split_once(','))
            .unwrap_or_else(|| panic!("unexpected variable query `{q}`"));
        let r = prom.api(
            &format!("label/{}/values", label.trim()),
            &[("match[]", metric.trim())],
        );
        assert!(
            r["data"]
                .as_array()
                .is_some_and(|vals| vals.iter().any(|x| x == &s.gw.admin.to_string())),
            "variable `{q}` does not list the gateway: {r}"
        );
    }

    // Every alert expression is valid; those this run must raise return data.
    let must_fire = [
        "SlapenirConfigReloadFailing",
        "SlapenirCertificateExpiringSoon",
    ];
    let must_not_fire = ["SlapenirGatewayDown"];
    let rules = alert_rules();
    for (name, expr) in &rules {
        let r = prom.query(expr);
        assert_eq!(r["status"], "success", "alert {name}: `{expr}` -> {r}");
        let n = r["data"]["result"].as_array().map_or(0, Vec::len);
        if must_fire.contains(&name.as_str()) {
            assert!(
                n > 0,
                "alert {name} should fire after this traffic: `{expr}` -> {r}"
            );
        }
        if must_not_fire.contains(&name.as_str()) {
            assert_eq!(n, 0, "alert {name} should not fire: `{expr}` -> {r}");
        }
    }
    for name in must_fire.iter().chain(&must_not_fire) {
        assert!(
            rules.iter().any(|(n, _)| n == name),
            "alerts.yml has no alert {name}"
        );
    }

    // Prometheus itself loaded the rules and evaluates each without error.
    wait_for(
        Duration::from_secs(30),
        "Prometheus to evaluate every rule without error",
        || {
            let r = prom.api("rules", &[]);
            let loaded: Vec<&Value> = r["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            (loaded.len() == rules.len()
                && loaded.iter().all(|rule| {
                    rule["health"] == "ok"
                        && !rule["lastEvaluation"]
                            .as_str()
                            .unwrap_or("0001")
                            .starts_with("0001")
                }))
            .then_some(())
        },
        || format!("{}", prom.api("rules", &[])),
    );
}
