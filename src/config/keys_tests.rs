//! The reference config documents every key the config structs read.

/// Every key of the YAML mirror structs (`raw.rs`, `limits.rs`) is documented in the
/// reference config, `conf/slapenir.yaml`, as `key:` (set, or commented out with its
/// format and default).
#[test]
fn every_config_key_is_documented_in_the_reference_config() {
    let reference = include_str!("../../conf/slapenir.yaml");
    let documented = |key: &str| {
        reference.contains(&format!("{{ {key}: "))
            || reference.lines().any(|l| {
                let l = l.trim_start_matches([' ', '#', '-']);
                l.strip_prefix(key)
                    .is_some_and(|rest| rest.starts_with(':'))
            })
    };
    let mut keys = Vec::new();
    for source in [include_str!("raw.rs"), include_str!("limits.rs")] {
        for block in source.split("pub struct Raw").skip(1) {
            let body = block.split_once('{').map_or("", |(_, b)| b);
            let body = body.split_once("\n}").map_or(body, |(b, _)| b);
            for line in body.lines() {
                if let Some(field) = line.trim().strip_prefix("pub ")
                    && let Some((name, _)) = field.split_once(':')
                {
                    keys.push(name.trim().to_owned());
                }
            }
        }
    }
    assert!(keys.len() > 40, "found only {} keys: {keys:?}", keys.len());
    let missing: Vec<&String> = keys.iter().filter(|k| !documented(k)).collect();
    assert!(missing.is_empty(), "not in conf/slapenir.yaml: {missing:?}");
}
