//! Table responses (`meta.k8s.io/v1` Table): the columns `kubectl get` prints, computed on the
//! server as Kubernetes does, plus two wide columns of our own: the application and the commit
//! that set the object.

use serde_json::{Value, json};
use shipshape_api::Kind;

/// A duration since `created` the way kubectl prints ages (`45s`, `12m`, `3h`, `5d`).
pub fn age(created: Option<&str>, now: jiff::Timestamp) -> String {
    let Some(created) = created.and_then(|c| c.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".into();
    };
    age_of_seconds(now.as_second().saturating_sub(created.as_second()))
}

/// `seconds` the way kubectl prints ages (`45s`, `12m`, `3h`, `5d`; negative counts as 0).
pub fn age_of_seconds(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn column(name: &str, kind: &str, priority: u8, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": if name == "Name" { "name" } else { "" },
           "description": description, "priority": priority})
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "<none>".into(),
        Value::String(s) if s.is_empty() => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Access modes as kubectl abbreviates them (`RWO,ROX`).
fn access_modes(value: &Value) -> String {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|mode| match mode {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn count(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

/// Kind-specific columns after Name (before Age), with their cells for one object.
fn kind_columns(kind: Kind) -> Vec<Value> {
    match kind {
        Kind::Deployment => vec![
            column("Ready", "string", 0, "Ready replicas out of desired"),
            column(
                "Up-to-date",
                "integer",
                0,
                "Replicas running the newest template",
            ),
            column("Available", "integer", 0, "Replicas available to serve"),
        ],
        Kind::ReplicaSet | Kind::ReplicationController => vec![
            column("Desired", "integer", 0, "Desired replicas"),
            column("Current", "integer", 0, "Current replicas"),
            column("Ready", "integer", 0, "Ready replicas"),
        ],
        Kind::StatefulSet => vec![column(
            "Ready",
            "string",
            0,
            "Ready replicas out of desired",
        )],
        Kind::Pod => vec![
            column("Ready", "string", 0, "Ready containers out of all"),
            column("Status", "string", 0, "The pod's phase"),
            column("Restarts", "integer", 0, "Container restarts"),
        ],
        Kind::Service => vec![
            column("Type", "string", 0, "How the Service is exposed"),
            column("Cluster-IP", "string", 0, "The virtual IP"),
            column("External-IP", "string", 0, "Addresses outside the cluster"),
            column("Port(s)", "string", 0, "Ports and protocols"),
        ],
        Kind::ConfigMap => vec![column("Data", "integer", 0, "Number of keys")],
        Kind::Secret => vec![
            column("Type", "string", 0, "The secret's type"),
            column("Data", "integer", 0, "Number of keys"),
        ],
        Kind::Namespace => vec![column("Status", "string", 0, "The namespace's phase")],
        Kind::Node => vec![
            column("Status", "string", 0, "Ready, NotReady, SchedulingDisabled"),
            column("Roles", "string", 0, "The node's roles"),
        ],
        Kind::PersistentVolumeClaim => vec![
            column("Status", "string", 0, "Pending, Bound or Lost"),
            column("Volume", "string", 0, "The volume it is bound to"),
            column("Capacity", "string", 0, "The volume's size"),
            column("Access Modes", "string", 0, "How it may be mounted"),
            column("StorageClass", "string", 0, "Its class"),
        ],
        Kind::PersistentVolume => vec![
            column("Capacity", "string", 0, "Its size"),
            column("Access Modes", "string", 0, "How it may be mounted"),
            column(
                "Reclaim Policy",
                "string",
                0,
                "What happens when its claim goes",
            ),
            column("Status", "string", 0, "Available, Bound or Released"),
            column("Claim", "string", 0, "The claim bound to it"),
            column("StorageClass", "string", 0, "Its class"),
        ],
        Kind::Ingress => vec![
            column("Class", "string", 0, "The IngressClass serving it"),
            column("Hosts", "string", 0, "The hosts its rules name"),
            column("Address", "string", 0, "Where the ingress serves it"),
            column("Ports", "string", 0, "The ports it is served on"),
        ],
        Kind::IngressClass => vec![
            column(
                "Controller",
                "string",
                0,
                "The controller serving the class",
            ),
            column("Parameters", "string", 0, "The controller's parameters"),
        ],
        Kind::StorageClass => vec![
            column("Provisioner", "string", 0, "Who makes its volumes"),
            column(
                "ReclaimPolicy",
                "string",
                0,
                "What happens to released volumes",
            ),
            column("VolumeBindingMode", "string", 0, "When claims are bound"),
        ],
        Kind::DaemonSet => vec![
            column("Desired", "integer", 0, "Nodes that should run the daemon"),
            column("Current", "integer", 0, "Nodes running it"),
            column("Ready", "integer", 0, "Nodes with a ready pod"),
            column("Up-to-date", "integer", 0, "Nodes on the newest template"),
            column("Available", "integer", 0, "Nodes with an available pod"),
            column("Node Selector", "string", 0, "Where it runs"),
        ],
        Kind::Job => vec![
            column(
                "Status",
                "string",
                0,
                "Running, Complete, Failed or Suspended",
            ),
            column("Completions", "string", 0, "Succeeded out of wanted"),
            column("Duration", "string", 0, "How long the Job ran"),
        ],
        Kind::CronJob => vec![
            column("Schedule", "string", 0, "The cron schedule"),
            column("Timezone", "string", 0, "The zone the schedule is read in"),
            column("Suspend", "boolean", 0, "Whether scheduling is suspended"),
            column("Active", "integer", 0, "Jobs running"),
            column(
                "Last Schedule",
                "string",
                0,
                "When a Job was last scheduled",
            ),
        ],
        _ => Vec::new(),
    }
}

fn kind_cells(kind: Kind, object: &Value) -> Vec<Value> {
    let spec = &object["spec"];
    let status = &object["status"];
    match kind {
        Kind::Deployment => vec![
            json!(format!(
                "{}/{}",
                count(&status["readyReplicas"]),
                spec["replicas"].as_i64().unwrap_or(1)
            )),
            json!(count(&status["updatedReplicas"])),
            json!(count(&status["availableReplicas"])),
        ],
        Kind::ReplicaSet | Kind::ReplicationController => vec![
            json!(spec["replicas"].as_i64().unwrap_or(1)),
            json!(count(&status["replicas"])),
            json!(count(&status["readyReplicas"])),
        ],
        Kind::StatefulSet => vec![json!(format!(
            "{}/{}",
            count(&status["readyReplicas"]),
            spec["replicas"].as_i64().unwrap_or(1)
        ))],
        Kind::Pod => {
            let containers = spec["containers"].as_array().map_or(0, Vec::len);
            let statuses = status["containerStatuses"].as_array();
            let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
            let restarts: i64 =
                statuses.map_or(0, |s| s.iter().map(|c| count(&c["restartCount"])).sum());
            let shown = pod_status_column(object);
            vec![
                json!(format!("{ready}/{containers}")),
                json!(shown),
                json!(restarts),
            ]
        }
        Kind::Service => {
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let protocol = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(node) => format!("{}:{node}/{protocol}", p["port"]),
                        None => format!("{}/{protocol}", p["port"]),
                    }
                })
                .collect();
            let external = status["loadBalancer"]["ingress"]
                .as_array()
                .and_then(|i| i.first())
                .and_then(|i| i["ip"].as_str())
                .or_else(|| spec["externalName"].as_str())
                .unwrap_or("<none>");
            vec![
                json!(spec["type"].as_str().unwrap_or("ClusterIP")),
                json!(text(&spec["clusterIP"])),
                json!(external),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
            ]
        }
        Kind::ConfigMap => {
            let keys = object["data"].as_object().map_or(0, |m| m.len())
                + object["binaryData"].as_object().map_or(0, |m| m.len());
            vec![json!(keys)]
        }
        Kind::Secret => vec![
            json!(object["type"].as_str().unwrap_or("Opaque")),
            json!(object["data"].as_object().map_or(0, |m| m.len())),
        ],
        Kind::Namespace => vec![json!(status["phase"].as_str().unwrap_or("Active"))],
        Kind::Node => {
            let ready = status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .map(|c| match c["status"].as_str() {
                    Some("True") => "Ready",
                    Some("False") => "NotReady",
                    _ => "Unknown",
                })
                .unwrap_or("Unknown");
            let status = if spec["unschedulable"] == true {
                format!("{ready},SchedulingDisabled")
            } else {
                ready.to_string()
            };
            vec![json!(status), json!("<none>")]
        }
        Kind::PersistentVolumeClaim => vec![
            json!(status["phase"].as_str().unwrap_or("Pending")),
            json!(spec["volumeName"].as_str().unwrap_or("")),
            json!(status["capacity"]["storage"].as_str().unwrap_or("")),
            json!(access_modes(&status["accessModes"])),
            json!(spec["storageClassName"].as_str().unwrap_or("local-path")),
        ],
        Kind::PersistentVolume => vec![
            json!(text(&spec["capacity"]["storage"])),
            json!(access_modes(&spec["accessModes"])),
            json!(
                spec["persistentVolumeReclaimPolicy"]
                    .as_str()
                    .unwrap_or("Retain")
            ),
            json!(status["phase"].as_str().unwrap_or("Pending")),
            json!(match (
                spec["claimRef"]["namespace"].as_str(),
                spec["claimRef"]["name"].as_str()
            ) {
                (Some(ns), Some(name)) => format!("{ns}/{name}"),
                _ => String::new(),
            }),
            json!(spec["storageClassName"].as_str().unwrap_or("")),
        ],
        Kind::Ingress => {
            let hosts: Vec<&str> = spec["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|rule| rule["host"].as_str().unwrap_or("*"))
                .collect();
            let addresses: Vec<&str> = status["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or_else(|| i["hostname"].as_str()))
                .collect();
            let tls = spec["tls"].as_array().is_some_and(|t| !t.is_empty());
            vec![
                json!(spec["ingressClassName"].as_str().unwrap_or("<none>")),
                json!(if hosts.is_empty() {
                    "*".to_string()
                } else {
                    hosts.join(",")
                }),
                json!(addresses.join(",")),
                json!(if tls { "80, 443" } else { "80" }),
            ]
        }
        Kind::IngressClass => vec![
            json!(text(&spec["controller"])),
            json!(if spec["parameters"].is_object() {
                "set"
            } else {
                "<none>"
            }),
        ],
        Kind::StorageClass => {
            vec![
                json!(text(&object["provisioner"])),
                json!(object["reclaimPolicy"].as_str().unwrap_or("Delete")),
                json!(object["volumeBindingMode"].as_str().unwrap_or("Immediate")),
            ]
        }
        Kind::DaemonSet => {
            let selector = spec["template"]["spec"]["nodeSelector"]
                .as_object()
                .filter(|m| !m.is_empty())
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_else(|| "<none>".into());
            vec![
                json!(count(&status["desiredNumberScheduled"])),
                json!(count(&status["currentNumberScheduled"])),
                json!(count(&status["numberReady"])),
                json!(count(&status["updatedNumberScheduled"])),
                json!(count(&status["numberAvailable"])),
                json!(selector),
            ]
        }
        Kind::Job => {
            let is = |kind: &str| {
                status["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == kind && c["status"] == "True")
            };
            let shown = if is("Complete") {
                "Complete"
            } else if is("Failed") {
                "Failed"
            } else if is("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            let duration = match status["startTime"].as_str() {
                Some(start) => {
                    let end = status["completionTime"]
                        .as_str()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .unwrap_or_else(jiff::Timestamp::now);
                    age(Some(start), end)
                }
                None => String::new(),
            };
            vec![
                json!(shown),
                json!(format!(
                    "{}/{}",
                    count(&status["succeeded"]),
                    spec["completions"].as_i64().unwrap_or(1)
                )),
                json!(duration),
            ]
        }
        Kind::CronJob => {
            let last = match status["lastScheduleTime"].as_str() {
                Some(at) => format!("{} ago", age(Some(at), jiff::Timestamp::now())),
                None => "<none>".into(),
            };
            vec![
                json!(text(&spec["schedule"])),
                json!(spec["timeZone"].as_str().unwrap_or("<none>")),
                json!(spec["suspend"].as_bool().unwrap_or(false)),
                json!(status["active"].as_array().map_or(0, Vec::len)),
                json!(last),
            ]
        }
        _ => Vec::new(),
    }
}

/// Columns after Age, as kubectl prints them (most only with `-o wide`).
fn after_age_columns(kind: Kind) -> Vec<Value> {
    match kind {
        Kind::Pod => vec![
            column("IP", "string", 1, "The pod's address"),
            column("Node", "string", 1, "The node it runs on"),
        ],
        Kind::Node => vec![
            column("Version", "string", 0, "The kubelet's version"),
            column("Internal-IP", "string", 1, "The node's address"),
            column("OS-Image", "string", 1, "The node's operating system"),
            column("Container-Runtime", "string", 1, "What runs its pods"),
        ],
        _ => Vec::new(),
    }
}

fn after_age_cells(kind: Kind, object: &Value) -> Vec<Value> {
    let status = &object["status"];
    match kind {
        Kind::Pod => vec![
            json!(text(&status["podIP"])),
            json!(text(&object["spec"]["nodeName"])),
        ],
        Kind::Node => {
            let internal = status["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
                .map_or(Value::Null, |a| a["address"].clone());
            let info = &status["nodeInfo"];
            vec![
                json!(text(&info["kubeletVersion"])),
                json!(text(&internal)),
                json!(text(&info["osImage"])),
                json!(text(&info["containerRuntimeVersion"])),
            ]
        }
        _ => Vec::new(),
    }
}

/// Events print as Kubernetes prints them: when, what kind, why, about what, and the message.
fn event_table(objects: &[&Value], resource_version: u64, now: jiff::Timestamp) -> Value {
    let columns = vec![
        column("Last Seen", "string", 0, "When it last happened"),
        column("Type", "string", 0, "Normal or Warning"),
        column("Reason", "string", 0, "A one-word reason"),
        column("Object", "string", 0, "What it is about"),
        column("Message", "string", 0, "What happened"),
        column("Name", "string", 1, "The Event's name"),
    ];
    let rows: Vec<Value> = objects
        .iter()
        .map(|event| {
            let involved = &event["involvedObject"];
            let object = format!(
                "{}/{}",
                involved["kind"].as_str().unwrap_or_default().to_ascii_lowercase(),
                involved["name"].as_str().unwrap_or_default()
            );
            json!({
                "cells": [
                    age(event["lastTimestamp"].as_str(), now),
                    text(&event["type"]),
                    text(&event["reason"]),
                    object,
                    text(&event["message"]),
                    text(&event["metadata"]["name"]),
                ],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": event["metadata"]},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The Table for `objects` of `kind`; rows carry the objects' metadata, as kubectl asks.
pub fn table(kind: Kind, objects: &[&Value], resource_version: u64, now: jiff::Timestamp) -> Value {
    if kind == Kind::Event {
        return event_table(objects, resource_version, now);
    }
    let mut columns = vec![column("Name", "string", 0, "The object's name")];
    columns.extend(kind_columns(kind));
    columns.push(column("Age", "string", 0, "Time since creation"));
    columns.extend(after_age_columns(kind));
    columns.push(column(
        "Application",
        "string",
        1,
        "The Git application that manages it",
    ));
    columns.push(column("Commit", "string", 1, "The commit that last set it"));
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let metadata = &object["metadata"];
            let mut cells = vec![json!(text(&metadata["name"]))];
            cells.extend(kind_cells(kind, object));
            cells.push(json!(age(metadata["creationTimestamp"].as_str(), now)));
            cells.extend(after_age_cells(kind, object));
            let annotations = &metadata["annotations"];
            cells.push(json!(text(&annotations["shipshape.dev/application"])));
            let commit = annotations["shipshape.dev/commit"]
                .as_str()
                .map(|c| c.get(..7).unwrap_or(c).to_string());
            cells.push(json!(commit.unwrap_or_else(|| "<none>".into())));
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata,
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// The STATUS column of `kubectl get pods`, as Kubernetes' printer derives it: the phase, or
/// the reason a container waits or ended (CrashLoopBackOff, ErrImageNeverPull, Error,
/// Completed, OOMKilled), `Init:…` while init containers run, Terminating when deleted.
fn pod_status_column(pod: &Value) -> String {
    let status = &pod["status"];
    let phase = status["phase"].as_str().unwrap_or("Pending");
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating".into();
    }
    let waiting_or_ended = |c: &Value| {
        c["state"]["waiting"]["reason"]
            .as_str()
            .or_else(|| c["state"]["terminated"]["reason"].as_str())
            .map(str::to_string)
    };
    let init = status["initContainerStatuses"].as_array();
    let total = pod["spec"]["initContainers"].as_array().map_or(0, Vec::len);
    if let Some(init) = init {
        for (index, c) in init.iter().enumerate() {
            if c["state"]["terminated"]["exitCode"] == 0 {
                continue;
            }
            return match c["state"]["waiting"]["reason"].as_str() {
                Some(reason) if reason != "PodInitializing" => format!("Init:{reason}"),
                _ => match c["state"]["terminated"]["reason"].as_str() {
                    Some(reason) => format!("Init:{reason}"),
                    None => format!("Init:{index}/{total}"),
                },
            };
        }
    }
    let mut shown = phase.to_string();
    if let Some(statuses) = status["containerStatuses"].as_array() {
        for c in statuses.iter().rev() {
            if let Some(reason) = waiting_or_ended(c) {
                shown = reason;
            }
        }
        let running = statuses.iter().any(|c| c["state"]["running"].is_object());
        if shown == "Completed" && running {
            shown = "Running".into();
        }
    }
    if shown == "Pending" && pod["spec"]["nodeName"].is_string() {
        shown = "ContainerCreating".into();
    }
    shown
}
