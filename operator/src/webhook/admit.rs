//! The admission decision: an `AdmissionReview` of a CacheCluster in, the same review with
//! the verdict out. The checks are [`crate::validate::admissible`], the ones the reconciler
//! makes, so a spec the webhook admits is one the operator can build and a spec it refuses is
//! refused with the message the status would have shown.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::crd::CacheCluster;
use crate::validate;

/// Characters the API server appends to a `generateName`.
const GENERATED_SUFFIX: &str = "xxxxx";

/// The verdict on one review, as the webhook answers it, and whether it refused the object.
#[derive(Debug)]
pub struct Verdict {
    /// The review to send back.
    pub review: AdmissionReview<DynamicObject>,
    /// Whether the object was refused (for the metrics).
    pub denied: bool,
}

/// Decides on the review in `body`. A body that is not a review of a CacheCluster is answered
/// as invalid (refused), which the API server reports as the webhook's error; it only sends
/// CacheClusters here, so that means the configuration is wrong, not the user's object.
pub fn review(body: &[u8]) -> Verdict {
    let review: AdmissionReview<CacheCluster> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(error) => {
            return Verdict {
                review: AdmissionResponse::invalid(format!(
                    "not an AdmissionReview of a CacheCluster: {error}"
                ))
                .into_review(),
                denied: true,
            };
        }
    };
    let request: AdmissionRequest<CacheCluster> = match review.try_into() {
        Ok(request) => request,
        Err(_) => {
            return Verdict {
                review: AdmissionResponse::invalid("the AdmissionReview has no request")
                    .into_review(),
                denied: true,
            };
        }
    };
    let response = AdmissionResponse::from(&request);
    match decide(&request) {
        Ok(()) => Verdict {
            review: response.into_review(),
            denied: false,
        },
        Err(message) => Verdict {
            review: response.deny(message).into_review(),
            denied: true,
        },
    }
}

/// `Ok` when the request may go ahead, else the message `kubectl apply` prints.
fn decide(request: &AdmissionRequest<CacheCluster>) -> Result<(), String> {
    // Only creates and updates carry a new spec; the configuration registers nothing else,
    // and a delete must never be held up by a check of the spec it removes.
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Ok(());
    }
    let Some(cluster) = &request.object else {
        return Err("the request carries no CacheCluster".to_string());
    };
    // Status and scale updates leave the spec as it is stored, which was admitted (or
    // predates the webhook; its status says what to fix then). So do updates that change
    // only metadata, and those of a cluster being deleted: a cluster stored before a check
    // existed must stay labelable, and the garbage collector must be able to clear its
    // finalizers.
    if request.sub_resource.is_some() || cluster.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    if request
        .old_object
        .as_ref()
        .is_some_and(|old| old.spec == cluster.spec)
    {
        return Ok(());
    }
    let name = match (&cluster.metadata.name, &cluster.metadata.generate_name) {
        (Some(name), _) if !name.is_empty() => name.clone(),
        (_, Some(prefix)) => format!("{prefix}{GENERATED_SUFFIX}"),
        _ => request.name.clone(),
    };
    let namespace = cluster
        .metadata
        .namespace
        .clone()
        .or_else(|| request.namespace.clone())
        .unwrap_or_default();
    validate::admissible(&name, &namespace, &cluster.spec).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use serde_json::{Value, json};

    fn body(operation: &str, object: Value, sub_resource: Option<&str>) -> Vec<u8> {
        let mut request = json!({
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "tidecache.io", "version": "v1alpha1", "kind": "CacheCluster"},
            "resource": {"group": "tidecache.io", "version": "v1alpha1", "resource": "cacheclusters"},
            "name": object["metadata"]["name"],
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        });
        if let Some(sub) = sub_resource {
            request["subResource"] = json!(sub);
        }
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request,
        }))
        .expect("json")
    }

    fn cluster_with(change: impl FnOnce(&mut CacheCluster)) -> Value {
        let mut cluster = fixtures::minimal();
        cluster.metadata.uid = None;
        change(&mut cluster);
        serde_json::to_value(cluster).expect("json")
    }

    /// The review's JSON answer: (allowed, message, uid).
    fn answer(verdict: &Verdict) -> (bool, String, String) {
        let value = serde_json::to_value(&verdict.review).expect("json");
        let response = &value["response"];
        assert_eq!(value["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(value["kind"], "AdmissionReview");
        (
            response["allowed"].as_bool().expect("allowed"),
            response["status"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            response["uid"].as_str().unwrap_or_default().to_string(),
        )
    }

    #[test]
    fn a_valid_cluster_is_admitted_with_the_request_uid() {
        let verdict = review(&body("CREATE", cluster_with(|_| {}), None));
        let (allowed, _, uid) = answer(&verdict);
        assert!(allowed);
        assert!(!verdict.denied);
        assert_eq!(uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    }

    /// An edit of the sample that makes it invalid.
    type Change = fn(&mut CacheCluster);

    #[test]
    fn what_only_rust_can_check_is_refused_with_the_contract_message() {
        let cases: [(Change, &str); 5] = [
            (
                |c| c.spec.expiry.schedule = "61 * * * *".into(),
                "spec.expiry.schedule",
            ),
            (
                |c| c.spec.expiry.schedule = "@every 5m".into(),
                "spec.expiry.schedule",
            ),
            (
                |c| c.spec.expiry.schedule = "0 0 30 2 *".into(),
                "spec.expiry.schedule",
            ),
            (
                |c| c.spec.expiry.time_zone = Some("Mars/Olympus".into()),
                "spec.expiry.timeZone",
            ),
            (
                |c| {
                    c.spec.memory.capacity = "1Pi".into();
                    c.spec.resources = Some(fixtures::memory_limit("512Mi"));
                },
                "spec.memory.capacity",
            ),
        ];
        for (change, field) in cases {
            let object = cluster_with(change);
            for operation in ["CREATE", "UPDATE"] {
                let verdict = review(&body(operation, object.clone(), None));
                let (allowed, message, _) = answer(&verdict);
                assert!(!allowed, "{operation} of {object} was admitted");
                assert!(verdict.denied);
                assert!(message.starts_with(&format!("{field}: ")), "{message}");
            }
        }
    }

    #[test]
    fn status_updates_and_deletes_are_never_held_up() {
        let bad = cluster_with(|c| c.spec.expiry.schedule = "61 * * * *".into());
        for (operation, sub) in [("UPDATE", Some("status")), ("DELETE", None)] {
            let verdict = review(&body(operation, bad.clone(), sub));
            assert!(answer(&verdict).0, "{operation} {sub:?}");
        }
    }

    #[test]
    fn an_update_leaving_a_stored_bad_spec_as_it_is_goes_ahead() {
        let bad = cluster_with(|c| c.spec.expiry.schedule = "61 * * * *".into());
        let mut labelled = bad.clone();
        labelled["metadata"]["labels"] = json!({"team": "orders"});
        let mut relabel: Value =
            serde_json::from_slice(&body("UPDATE", labelled, None)).expect("json");
        relabel["request"]["oldObject"] = bad.clone();
        let verdict = review_of(&relabel);
        assert!(answer(&verdict).0, "a label change was refused");
        let mut deleting = bad.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-03T10:00:00Z");
        deleting["metadata"]["finalizers"] = json!([]);
        let verdict = review(&body("UPDATE", deleting, None));
        assert!(answer(&verdict).0, "clearing a finalizer was refused");
        let mut changed = bad.clone();
        changed["spec"]["replicas"] = json!(5);
        let mut review_changed: Value =
            serde_json::from_slice(&body("UPDATE", changed, None)).expect("json");
        review_changed["request"]["oldObject"] = bad;
        assert!(
            !answer(&review_of(&review_changed)).0,
            "a spec change is checked"
        );
    }

    fn review_of(value: &Value) -> Verdict {
        review(&serde_json::to_vec(value).expect("json"))
    }

    #[test]
    fn a_body_that_is_no_review_is_refused_as_invalid() {
        let verdict = review(b"{\"kind\": 3}");
        let (allowed, message, _) = answer(&verdict);
        assert!(!allowed);
        assert!(message.contains("not an AdmissionReview"), "{message}");
    }
}
