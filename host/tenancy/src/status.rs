//! What a connection still lacks before its plugin gets what it asks for,
//! and what a failed call's refusals mean for the tenant: each said with
//! the fix, because "ok" followed by a bare 403 leaves nobody anywhere.

use patchbay_egress::credentials::CredentialInfo;
use patchbay_policy::http::Denial;
use patchbay_policy::manifest::Manifest;
use patchbay_policy::ssrf::AddressPolicy;
use patchbay_storage::tenancy::Connection;

/// `ok`, `disabled` or `needs-attention`, and every reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// `ok`, `disabled` or `needs-attention`.
    pub status: &'static str,
    /// Each thing missing, with how to fix it; empty when nothing is.
    pub reasons: Vec<String>,
}

/// Where a credential of `connection` is set.
fn credential_path(connection: &Connection, name: &str) -> String {
    format!(
        "PUT /v1/workspaces/{}/connections/{}/credentials/{name}",
        connection.workspace, connection.name
    )
}

/// The connection's status: `needs-attention` while anything its plugin
/// version asks for is not approved, or a credential it declares is not set
/// or was refused for good. A disabled connection still lists its reasons.
pub fn status(
    connection: &Connection,
    manifest: &Manifest,
    credentials: &[CredentialInfo],
    addresses: &AddressPolicy,
) -> Status {
    let mut reasons = Vec::new();
    reasons.extend(refused_addresses(connection, manifest, addresses));
    reasons.extend(unapproved_capabilities(connection, manifest));
    reasons.extend(credential_reasons(connection, manifest, credentials));
    let status = if !connection.enabled {
        "disabled"
    } else if reasons.is_empty() {
        "ok"
    } else {
        "needs-attention"
    };
    Status { status, reasons }
}

/// An approved destination written as one address the operator refuses (a
/// `base_url` of http://127.0.0.1:…) would fail every call.
fn refused_addresses(
    connection: &Connection,
    manifest: &Manifest,
    addresses: &AddressPolicy,
) -> Option<String> {
    let binding = patchbay_runtime::Binding::for_connection(connection, manifest).ok()?;
    let mut refused: Vec<String> = binding
        .http_rules
        .iter()
        .filter_map(|rule| rule.single_address())
        .filter_map(|ip| {
            addresses
                .allows(ip)
                .err()
                .map(|class| format!("{ip} ({class})"))
        })
        .collect();
    refused.sort();
    refused.dedup();
    (!refused.is_empty()).then(|| format!(
        "destination address {} is refused by operator policy (the operator can allow it with serve --allow-cidr or addresses.allowed_cidrs in the policy file)",
        refused.join(", ")
    ))
}

/// What the plugin asks for that the workspace has not approved:
/// destinations, KV, credentials.
fn unapproved_capabilities(connection: &Connection, manifest: &Manifest) -> Vec<String> {
    let caps = &manifest.capabilities;
    let grants = &connection.grants;
    let mut reasons = Vec::new();
    let unapproved: Vec<String> = caps
        .http
        .iter()
        .filter(|d| !grants.allows_destination(d))
        .map(|d| format!("{:?}", d.to_string()))
        .collect();
    if !unapproved.is_empty() {
        reasons.push(format!(
            "destinations not approved: {} (approve them in grants.http, or all the plugin asks for with grants.approve_all_requested)",
            unapproved.join(", ")
        ));
    }
    if caps.kv.is_some() && !grants.allows_kv() {
        reasons.push(
            "the key-value store is not approved (approve it with grants.kv, or grants.approve_all_requested)"
                .to_owned(),
        );
    }
    for declared in &caps.credentials {
        let name = &declared.name;
        if !grants.allows_credential(name) {
            reasons.push(format!(
                "credential {name} is not approved (approve it in grants.credentials, or with grants.approve_all_requested)"
            ));
        }
    }
    reasons
}

/// Each declared credential that is not set, or was refused for good.
fn credential_reasons(
    connection: &Connection,
    manifest: &Manifest,
    credentials: &[CredentialInfo],
) -> Vec<String> {
    let mut reasons = Vec::new();
    for declared in &manifest.capabilities.credentials {
        let name = &declared.name;
        match credentials.iter().find(|c| &c.name == name) {
            Some(CredentialInfo {
                needs_attention: Some(why),
                ..
            }) => reasons.push(format!(
                "credential {name}: {why} (set it again with {})",
                credential_path(connection, name)
            )),
            Some(info) if info.set => {}
            _ => reasons.push(format!(
                "credential {name} is not set ({})",
                credential_path(connection, name)
            )),
        }
    }
    reasons
}

/// Most refusals a failed call's error lists; one call may be refused
/// thousands of times, and the first few say what is wrong.
const MAX_EXPLAINED: usize = 5;

/// Each refused request of a failed call, with the fix for its kind.
pub fn explain_denials(
    connection: &Connection,
    manifest: &Manifest,
    denials: &[Denial],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (seen, denial) in denials.iter().enumerate() {
        if out.len() == MAX_EXPLAINED {
            out.push(format!("{} more refused requests", denials.len() - seen));
            break;
        }
        let line = format!(
            "{} {} was refused: {}",
            denial.method,
            shortened(&denial.url),
            explain(connection, manifest, &denial.reason)
        );
        if !out.contains(&line) {
            out.push(line);
        }
    }
    out
}

/// A plugin chooses its URLs: an error quotes at most the start of one.
fn shortened(url: &str) -> String {
    const MAX_CHARS: usize = 200;
    match url.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &url[..cut]),
        None => url.to_owned(),
    }
}

/// The gate's reason for a refusal, with what fixes it.
fn explain(connection: &Connection, manifest: &Manifest, reason: &str) -> String {
    if reason.contains("not approved") {
        let unapproved: Vec<String> = manifest
            .capabilities
            .http
            .iter()
            .filter(|d| !connection.grants.allows_destination(d))
            .map(|d| format!("{:?}", d.to_string()))
            .collect();
        format!(
            "{reason}; approve it in grants.http (not yet approved: {}), or with grants.approve_all_requested",
            unapproved.join(", ")
        )
    } else if reason.contains("refused address")
        || (reason.contains("address") && reason.contains("operator policy"))
    {
        format!(
            "{reason}; the address is refused by operator policy: the operator can allow its range with --allow-cidr or the policy file's addresses.allowed_cidrs"
        )
    } else if reason.contains("operator policy") {
        format!(
            "{reason}; the operator's destinations list (the policy file's destinations) does not include it"
        )
    } else {
        reason.to_owned()
    }
}

/// Approved credentials that cannot be used: requests they apply to get the
/// host's own 401 and are never sent. Each with its fix.
pub fn unusable_credentials(
    connection: &Connection,
    manifest: &Manifest,
    credentials: &[CredentialInfo],
) -> Vec<String> {
    manifest
        .capabilities
        .credentials
        .iter()
        .filter(|declared| connection.grants.allows_credential(&declared.name))
        .filter_map(|declared| {
            let name = &declared.name;
            let path = credential_path(connection, name);
            match credentials.iter().find(|c| &c.name == name) {
                Some(CredentialInfo {
                    needs_attention: Some(why),
                    ..
                }) => Some(format!(
                    "credential {name} was refused for good ({why}), so the host answered its requests with a 401 and sent nothing: set it again with {path}"
                )),
                Some(info) if info.set => None,
                _ => Some(format!(
                    "credential {name} is not set, so the host answered its requests with a 401 and sent nothing: set it with {path}"
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchbay_policy::grants::Grants;
    use patchbay_policy::limits::ConnectionLimits;
    use std::collections::BTreeSet;

    fn manifest() -> Manifest {
        patchbay_policy::test_support::sample_manifest()
    }

    fn connection(grants: Grants, enabled: bool) -> Connection {
        Connection {
            workspace: "acme".into(),
            name: "crm".into(),
            plugin: "crm".into(),
            version: semver::Version::new(1, 0, 0),
            config: serde_json::Map::new(),
            grants,
            limits: ConnectionLimits::default(),
            enabled,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    fn token(set: bool, needs_attention: Option<&str>) -> Vec<CredentialInfo> {
        vec![CredentialInfo {
            name: "token".into(),
            kind: "bearer",
            set,
            needs_attention: needs_attention.map(str::to_owned),
        }]
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_connection_is_ok_only_when_everything_asked_for_is_approved_and_set() {
        let all = Grants::all_requested();
        let nothing = Grants::default();
        let some = Grants {
            http: set(&["GET https://api.example.com/v1"]),
            credentials: set(&["token"]),
            ..Grants::default()
        };
        // (grants, enabled, stored credential, status, a phrase of each reason)
        type Case = (
            Grants,
            bool,
            Vec<CredentialInfo>,
            &'static str,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (all.clone(), true, token(true, None), "ok", vec![]),
            (all.clone(), false, token(true, None), "disabled", vec![]),
            (
                all.clone(),
                true,
                vec![],
                "needs-attention",
                vec![
                    "credential token is not set (PUT /v1/workspaces/acme/connections/crm/credentials/token)",
                ],
            ),
            (
                all.clone(),
                true,
                token(true, Some("the token endpoint refused it: invalid_grant")),
                "needs-attention",
                vec![
                    "credential token: the token endpoint refused it: invalid_grant (set it again with PUT",
                ],
            ),
            (
                nothing.clone(),
                true,
                token(true, None),
                "needs-attention",
                vec![
                    "destinations not approved: \"GET https://api.example.com/v1\", \"https://{{instance}}.example.com\" (approve them in grants.http",
                    "the key-value store is not approved",
                    "credential token is not approved",
                ],
            ),
            (
                nothing,
                false,
                vec![],
                "disabled",
                vec!["destinations not approved", "kv", "not approved", "not set"],
            ),
            (
                some,
                true,
                token(true, None),
                "needs-attention",
                vec![
                    "destinations not approved: \"https://{{instance}}.example.com\" (",
                    "the key-value store is not approved",
                ],
            ),
        ];
        let m = manifest();
        for (grants, enabled, stored, expected, phrases) in cases {
            let label = format!("{grants:?} enabled={enabled} {stored:?}");
            let got = status(
                &connection(grants, enabled),
                &m,
                &stored,
                &AddressPolicy::default(),
            );
            assert_eq!(got.status, expected, "{label}: {got:?}");
            assert_eq!(got.reasons.len(), phrases.len(), "{label}: {got:?}");
            for (reason, phrase) in got.reasons.iter().zip(&phrases) {
                assert!(
                    reason.contains(phrase),
                    "{label}: {reason:?} lacks {phrase:?}"
                );
            }
        }
    }

    #[test]
    fn a_destination_at_an_address_the_operator_refuses_needs_attention() {
        let m = patchbay_policy::test_support::test_manifest(
            "1.0.0",
            "[capabilities.http]\ndestinations = [\"POST {{base_url}}/crm\"]\n",
        );
        let allowing = |cidrs: &[&str]| AddressPolicy {
            allowed_cidrs: cidrs.iter().map(|c| c.parse().expect("cidr")).collect(),
        };
        let cases = [
            (
                "http://127.0.0.1:4010",
                allowing(&[]),
                Some("127.0.0.1 (loopback)"),
            ),
            (
                "http://127.1:4010",
                allowing(&[]),
                Some("127.0.0.1 (loopback)"),
            ),
            (
                "http://169.254.169.254",
                allowing(&[]),
                Some("169.254.169.254 (link-local)"),
            ),
            ("http://127.0.0.1:4010", allowing(&["127.0.0.1/32"]), None),
            ("https://api.example.com", allowing(&[]), None),
        ];
        for (base_url, policy, refused) in cases {
            let mut c = connection(Grants::all_requested(), true);
            c.config.insert(
                "base_url".into(),
                serde_json::Value::String(base_url.into()),
            );
            let got = status(&c, &m, &[], &policy);
            match refused {
                Some(phrase) => {
                    assert_eq!(got.status, "needs-attention", "{base_url}: {got:?}");
                    assert!(
                        got.reasons
                            .iter()
                            .any(|r| r.contains(phrase) && r.contains("--allow-cidr")),
                        "{base_url}: {got:?}"
                    );
                }
                None => assert_eq!(got.status, "ok", "{base_url}: {got:?}"),
            }
        }
    }

    #[test]
    fn each_kind_of_refusal_names_its_fix() {
        let c = connection(
            Grants {
                http: set(&["GET https://api.example.com/v1"]),
                ..Grants::default()
            },
            true,
        );
        let cases = [
            (
                "the destination is declared but the workspace has not approved it",
                "approve it in grants.http (not yet approved: \"https://{{instance}}.example.com\")",
            ),
            (
                "address 127.0.0.1 is loopback and operator policy does not allow it",
                "--allow-cidr or the policy file's addresses.allowed_cidrs",
            ),
            (
                "crm.test resolves only to refused addresses (private 10.0.0.5)",
                "--allow-cidr or the policy file's addresses.allowed_cidrs",
            ),
            (
                "operator policy does not allow this destination",
                "the policy file's destinations",
            ),
            (
                "no declared destination matches",
                "no declared destination matches",
            ),
        ];
        let m = manifest();
        for (reason, fix) in cases {
            let denial = Denial {
                method: "GET".into(),
                url: "https://x.example.com/a".into(),
                reason: reason.into(),
            };
            let explained = explain_denials(&c, &m, &[denial]);
            assert_eq!(explained.len(), 1, "{explained:?}");
            assert!(
                explained[0].starts_with("GET https://x.example.com/a was refused: ")
                    && explained[0].contains(reason)
                    && explained[0].contains(fix),
                "{reason}: {explained:?}"
            );
        }
    }

    #[test]
    fn a_flood_of_refusals_is_explained_in_a_few_lines() {
        let c = connection(Grants::default(), true);
        let denials: Vec<Denial> = (0..1000)
            .map(|i| Denial {
                method: "GET".into(),
                url: format!("https://x.example.com/{i}"),
                reason: "no declared destination matches".into(),
            })
            .collect();
        let explained = explain_denials(&c, &manifest(), &denials);
        assert_eq!(explained.len(), MAX_EXPLAINED + 1, "{explained:?}");
        assert_eq!(explained[MAX_EXPLAINED], "995 more refused requests");
        let long = Denial {
            url: format!("https://x.example.com/{}", "a".repeat(100_000)),
            ..denials[0].clone()
        };
        let explained = explain_denials(&c, &manifest(), &[long]);
        assert!(explained[0].len() < 400, "{} bytes", explained[0].len());
        let same = vec![denials[0].clone(); 3];
        assert_eq!(explain_denials(&c, &manifest(), &same).len(), 1);
    }

    #[test]
    fn only_approved_credentials_that_cannot_be_used_are_named() {
        let m = manifest();
        let approved = connection(Grants::all_requested(), true);
        let cases = [
            (approved.clone(), token(true, None), None),
            (
                approved.clone(),
                vec![],
                Some(
                    "credential token is not set, so the host answered its requests with a 401 and sent nothing: set it with PUT /v1/workspaces/acme/connections/crm/credentials/token",
                ),
            ),
            (
                approved,
                token(true, Some("invalid_grant")),
                Some("credential token was refused for good (invalid_grant)"),
            ),
            // Not approved: never sent anyway, and the status says so.
            (connection(Grants::default(), true), vec![], None),
        ];
        for (c, stored, expected) in cases {
            let got = unusable_credentials(&c, &m, &stored);
            match expected {
                None => assert!(got.is_empty(), "{stored:?}: {got:?}"),
                Some(phrase) => {
                    assert_eq!(got.len(), 1, "{got:?}");
                    assert!(got[0].contains(phrase), "{got:?}");
                }
            }
        }
    }
}
