//! The EndpointSlice JSON shape (`discovery.k8s.io/v1`), as far as apiserver
//! discovery needs it.
//!
//! The simulator serves these types and the daemon parses them, so both sides
//! agree on one shape. Fields the auditor does not need are not modelled and
//! are ignored when parsing; missing optional fields parse as their defaults.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The API path listing the EndpointSlices of Service `default/kubernetes`.
pub const KUBERNETES_SLICES_PATH: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes";

/// `GET .../endpointslices`: a list of slices.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSliceList {
    /// Always `discovery.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// Always `EndpointSliceList`.
    #[serde(default)]
    pub kind: String,
    /// List metadata (resource version).
    #[serde(default)]
    pub metadata: ListMeta,
    /// The slices; `null` parses as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub items: Vec<EndpointSlice>,
}

/// Metadata of a list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    /// Opaque version of the list.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
}

/// One EndpointSlice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSlice {
    /// Object metadata (name, namespace, labels).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// `IPv4`, `IPv6` or `FQDN`.
    #[serde(default)]
    pub address_type: String,
    /// The endpoints; `null` parses as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<Endpoint>,
    /// The ports every endpoint of this slice serves; `null` parses as empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ports: Vec<EndpointPort>,
}

/// Object metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name.
    #[serde(default)]
    pub name: String,
    /// Namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Opaque object version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Labels.
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

/// One endpoint: the addresses of one backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// Addresses of this endpoint (one for apiservers).
    #[serde(default, deserialize_with = "null_as_default")]
    pub addresses: Vec<String>,
    /// Readiness.
    #[serde(default)]
    pub conditions: EndpointConditions,
}

/// The conditions of an endpoint; an unknown (absent) condition is `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointConditions {
    /// Ready to receive traffic. The API says consumers should treat an
    /// unknown state as ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Serving (ready or not terminating).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    /// Terminating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminating: Option<bool>,
}

/// A port of a slice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPort {
    /// Port name (`https` for the `kubernetes` Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `TCP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

impl EndpointSliceList {
    /// The socket addresses of every ready endpoint on the port named
    /// `port_name`, sorted and without duplicates. Endpoints whose readiness is
    /// unknown count as ready (as the API asks); FQDN slices and unparsable
    /// addresses are skipped.
    pub fn ready_addresses(&self, port_name: &str) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for slice in &self.items {
            if slice.address_type == "FQDN" {
                continue;
            }
            let Some(port) = slice
                .ports
                .iter()
                .find(|p| p.name.as_deref() == Some(port_name))
                .and_then(|p| p.port)
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                if endpoint.conditions.ready == Some(false) {
                    continue;
                }
                for address in &endpoint.addresses {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        out.push(SocketAddr::new(ip, port));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

fn null_as_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expected: &[&str]) {
        let list: EndpointSliceList = serde_json::from_str(json).expect("valid JSON");
        let got: Vec<String> = list
            .ready_addresses("https")
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, expected, "{json}");
    }

    #[test]
    fn ready_addresses_follow_the_api_rules() {
        // The shape a real apiserver returns for the `kubernetes` Service.
        check(
            r#"{"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1","metadata":{"resourceVersion":"1"},
               "items":[{"metadata":{"name":"kubernetes","namespace":"default","labels":{"kubernetes.io/service-name":"kubernetes"}},
               "addressType":"IPv4","endpoints":[{"addresses":["10.0.0.2"],"conditions":{"ready":true}},
               {"addresses":["10.0.0.1"]},{"addresses":["10.0.0.3"],"conditions":{"ready":false}}],
               "ports":[{"name":"https","port":6443,"protocol":"TCP"}]}]}"#,
            &["10.0.0.1:6443", "10.0.0.2:6443"],
        );
        check(r#"{"items":null}"#, &[]);
        check(
            r#"{"items":[{"addressType":"IPv6","endpoints":[{"addresses":["fd00::1"]}],"ports":[{"name":"https","port":443}]}]}"#,
            &["[fd00::1]:443"],
        );
        check(
            r#"{"items":[{"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.1"]}],"ports":[{"name":"http","port":80}]}]}"#,
            &[],
        );
        check(
            r#"{"items":[{"addressType":"FQDN","endpoints":[{"addresses":["a.example"]}],"ports":[{"name":"https","port":443}]}]}"#,
            &[],
        );
    }
}
