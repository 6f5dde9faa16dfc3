//! Audit rows as FHIR R4 `AuditEvent` resources, for export to other systems.

use serde_json::{Value, json};

use crate::store::{Row, StoreError};

const CAREWIRE: &str = "https://carewire.dev/fhir";

/// The FHIR R4 AuditEvent for a stored row.
pub fn audit_event(row: &Row) -> Result<Value, StoreError> {
    let event = row.event()?;
    let action_code = match event.action.as_str() {
        "create" => "C",
        "read" => "R",
        "update" => "U",
        "delete" => "D",
        _ => "E",
    };
    let (type_coding, subtype) = match event.action.as_str() {
        "login" | "login_failed" => (
            json!({ "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114", "display": "User Authentication" }),
            Some(
                json!({ "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110122", "display": "Login" }),
            ),
        ),
        "logout" => (
            json!({ "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114", "display": "User Authentication" }),
            Some(
                json!({ "system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110123", "display": "Logout" }),
            ),
        ),
        _ => (
            json!({ "system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation" }),
            None,
        ),
    };
    let mut subtypes =
        vec![json!({ "system": format!("{CAREWIRE}/audit-action"), "code": event.action.as_str() })];
    subtypes.extend(subtype);

    let mut agent = json!({
        "type": { "coding": [{ "system": format!("{CAREWIRE}/actor-kind"), "code": event.actor.kind() }] },
        "requestor": true,
    });
    if let Some(id) = event.actor.id() {
        agent["who"] =
            json!({ "identifier": { "system": format!("{CAREWIRE}/account"), "value": id.to_string() } });
    }
    if let Some(role) = event.actor.role() {
        agent["role"] =
            json!([{ "coding": [{ "system": format!("{CAREWIRE}/role"), "code": role.as_str() }] }]);
    }
    if let Some(ip) = &event.client_ip {
        agent["network"] = json!({ "address": ip.to_string(), "type": if ip.is_ipv4() || ip.is_ipv6() { "2" } else { "5" } });
    }

    let mut entities = Vec::new();
    let mut what = json!({ "identifier": { "system": format!("{CAREWIRE}/{}", event.resource_type), } });
    if let Some(id) = event.resource_id {
        what["identifier"]["value"] = json!(id.to_string());
    }
    let details: Vec<Value> = event
        .details
        .iter()
        .map(|(key, value)| {
            let text = match value {
                crate::event::DetailValue::Id(id) => id.to_string(),
                crate::event::DetailValue::Code(code) => code.to_string(),
                crate::event::DetailValue::Count(n) => n.to_string(),
            };
            json!({ "type": key.as_str(), "valueString": text })
        })
        .collect();
    let mut entity = json!({
        "what": what,
        "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object" },
    });
    if !details.is_empty() {
        entity["detail"] = json!(details);
    }
    entities.push(entity);
    if let Some(patient) = event.patient_id {
        entities.push(json!({
            "what": { "reference": format!("Patient/{patient}") },
            "type": { "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person" },
            "role": { "system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient" },
        }));
    }

    let (outcome, outcome_desc) = match &event.outcome {
        crate::event::Outcome::Success => ("0", None),
        crate::event::Outcome::Failure(reason) => ("4", Some(reason.to_string())),
    };
    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": row.seq().map(|s| s.to_string()).unwrap_or_else(|| format!("unsealed-{}", row.id())),
        "type": type_coding,
        "subtype": subtypes,
        "action": action_code,
        "recorded": row.event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "outcome": outcome,
        "purposeOfEvent": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": event.purpose.as_str() }] }],
        "agent": [agent],
        "source": {
            "observer": { "display": "Carewire" },
            "type": [{ "system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server" }],
        },
        "entity": entities,
    });
    if let Some(desc) = outcome_desc {
        resource["outcomeDesc"] = json!(desc);
    }
    if let Some(request_id) = &event.request_id {
        resource["extension"] = json!([{ "url": format!("{CAREWIRE}/StructureDefinition/request-id"), "valueString": request_id }]);
    }
    Ok(resource)
}
