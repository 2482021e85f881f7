//! `admission.k8s.io` `AdmissionReview` documents: the request the API server sends, where
//! the object keeps its images, and the response it expects back (in the version it sent).
//!
//! ```
//! use donjon_validate::review::{images, Review};
//!
//! let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
//!   "uid":"705ab4f5-6393-11e8-b7cc-42010a800002","kind":{"group":"","version":"v1","kind":"Pod"},
//!   "operation":"CREATE","object":{"apiVersion":"v1","kind":"Pod",
//!   "spec":{"containers":[{"name":"web","image":"nginx"}]}}}}"#;
//! let review = Review::parse(body).unwrap();
//! assert_eq!(review.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
//! let found = images(&review.kind, review.object.as_ref().unwrap()).unwrap();
//! assert_eq!(found[0].pointer, "/spec/containers/0/image");
//! assert_eq!(found[0].image, "nginx");
//! ```

use serde::Deserialize;
use serde_json::{json, Value};

/// The `AdmissionReview` versions understood; the answer uses the request's.
pub const VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// The parts of a review request the webhooks use.
#[derive(Clone, Debug)]
pub struct Review {
    /// `admission.k8s.io/v1` (or `v1beta1`): the answer is in the same version.
    pub api_version: String,
    /// `request.uid`, echoed in the answer.
    pub uid: String,
    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub operation: String,
    /// `request.kind.kind` (`Pod`, `Deployment`, …), or the object's own `kind`.
    pub kind: String,
    /// The object being admitted (absent for `DELETE`).
    pub object: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: Option<String>,
    kind: Option<String>,
    request: Option<RequestPart>,
}

#[derive(Deserialize)]
struct RequestPart {
    uid: Option<String>,
    kind: Option<Gvk>,
    operation: Option<String>,
    object: Option<Value>,
}

#[derive(Deserialize)]
struct Gvk {
    kind: Option<String>,
}

impl Review {
    /// Parses a request body; the error says what is wrong with it, for a 400 answer.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let env: Envelope =
            serde_json::from_slice(body).map_err(|e| format!("the body is not an AdmissionReview: {e}"))?;
        let api_version = env.api_version.unwrap_or_default();
        if !VERSIONS.contains(&api_version.as_str()) {
            return Err(format!(
                "apiVersion {api_version:?} is not one of {}; set the webhook's admissionReviewVersions to [v1]",
                VERSIONS.join(", ")
            ));
        }
        if env.kind.as_deref() != Some("AdmissionReview") {
            return Err(format!("kind {:?} is not AdmissionReview", env.kind.unwrap_or_default()));
        }
        let req = env.request.ok_or("the AdmissionReview has no request")?;
        let uid = req.uid.filter(|u| !u.is_empty()).ok_or("the AdmissionReview's request has no uid")?;
        let object = req.object.filter(|o| !o.is_null());
        let kind = req
            .kind
            .and_then(|k| k.kind)
            .or_else(|| object.as_ref().and_then(|o| o.get("kind")?.as_str().map(str::to_string)))
            .unwrap_or_default();
        Ok(Self { api_version, uid, operation: req.operation.unwrap_or_default(), kind, object })
    }

    /// The answer: allowed, or refused with an HTTP-like `code` and a message the user sees;
    /// a JSON Patch when there are operations.
    pub fn answer(&self, allowed: bool, status: Option<(u16, &str)>, patch: Option<&[Value]>) -> Value {
        let mut response = json!({ "uid": self.uid, "allowed": allowed });
        if let Some((code, message)) = status {
            response["status"] = json!({ "code": code, "message": message });
        }
        if let Some(ops) = patch.filter(|p| !p.is_empty()) {
            use base64::Engine;
            let bytes = serde_json::to_vec(ops).unwrap_or_default();
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        json!({ "apiVersion": self.api_version, "kind": "AdmissionReview", "response": response })
    }
}

/// One container's image and where it is in the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageAt {
    /// A JSON Pointer (RFC 6901) to the `image` field: `/spec/template/spec/containers/0/image`.
    pub pointer: String,
    /// The container's name, for messages.
    pub container: String,
    /// The image as written.
    pub image: String,
}

/// Where each kind keeps its pod spec.
fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &["spec"],
        "PodTemplate" => &["template", "spec"],
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" | "Job" => {
            &["spec", "template", "spec"]
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    })
}

/// The kinds whose images are checked.
pub const KINDS: &str =
    "Pod, PodTemplate, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob";

/// Every image of every container list of `object`'s pod spec, in order: `containers`,
/// `initContainers`, `ephemeralContainers`. An unknown kind, or a spec of the wrong shape, is
/// an error naming it: the webhook never lets an object through unread.
pub fn images(kind: &str, object: &Value) -> Result<Vec<ImageAt>, String> {
    let path = pod_spec_path(kind).ok_or_else(|| {
        format!("donjon does not know where a {kind:?} keeps its images; the webhook's rules should name only {KINDS}")
    })?;
    let mut spec = object;
    let mut pointer = String::new();
    if !object.is_object() {
        return Err(format!("the {kind} is not a JSON object"));
    }
    for key in path {
        match spec.get(key) {
            // Each step of the way is an object, as Kubernetes defines it: a spec of another
            // shape is refused, never read as "no containers".
            Some(v) if v.is_object() => spec = v,
            Some(v) if !v.is_null() => {
                return Err(format!(
                    "{pointer}/{key} is not an object (a {kind}'s pod spec is), but {}",
                    shape(v)
                ))
            }
            // No pod template (yet): nothing to run, nothing to check.
            _ => return Ok(vec![]),
        }
        pointer.push('/');
        pointer.push_str(key);
    }
    let mut out = vec![];
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(containers) = spec.get(list).filter(|v| !v.is_null()) else { continue };
        let containers = containers.as_array().ok_or_else(|| {
            format!("{pointer}/{list} is not a list of containers, but {}", shape(containers))
        })?;
        for (i, c) in containers.iter().enumerate() {
            if !c.is_object() {
                return Err(format!("{pointer}/{list}/{i} is not a container object, but {}", shape(c)));
            }
            let name = match c.get("name") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(n)) => n.clone(),
                Some(other) => {
                    return Err(format!("{pointer}/{list}/{i}/name is not a string, but {}", shape(other)))
                }
            };
            match c.get("image") {
                None | Some(Value::Null) => continue,
                Some(Value::String(image)) => out.push(ImageAt {
                    pointer: format!("{pointer}/{list}/{i}/image"),
                    container: name,
                    image: image.clone(),
                }),
                Some(_) => return Err(format!("{pointer}/{list}/{i}/image is not a string")),
            }
        }
    }
    Ok(out)
}

/// What a JSON value is, for messages.
fn shape(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_specs_of_another_shape_are_refused_naming_where() {
        for (kind, object, at) in [
            ("Pod", json!({"spec": "x"}), "/spec is not an object"),
            ("Pod", json!({"spec": ["x"]}), "/spec is not an object"),
            ("Pod", json!({"spec": 5}), "/spec is not an object"),
            ("Pod", json!("x"), "not a JSON object"),
            (
                "Deployment",
                json!({"spec": {"template": {"spec": 5}}}),
                "/spec/template/spec is not an object",
            ),
            ("Deployment", json!({"spec": {"template": "t"}}), "/spec/template is not an object"),
            ("Deployment", json!({"spec": []}), "/spec is not an object"),
            (
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": true}}}),
                "/spec/jobTemplate/spec is not an object",
            ),
            ("Pod", json!({"spec": {"containers": "nginx"}}), "/spec/containers is not a list"),
            (
                "Pod",
                json!({"spec": {"initContainers": {"image": "x"}}}),
                "/spec/initContainers is not a list",
            ),
            ("Pod", json!({"spec": {"containers": ["nginx"]}}), "/spec/containers/0 is not a container"),
            (
                "Pod",
                json!({"spec": {"ephemeralContainers": [7]}}),
                "/spec/ephemeralContainers/0 is not a container",
            ),
            ("Pod", json!({"spec": {"containers": [{"name": 1, "image": "x"}]}}), "/spec/containers/0/name"),
        ] {
            let e = images(kind, &object).expect_err(&format!("{kind} {object} must be refused"));
            assert!(e.contains(at), "{kind} {object}: {e}");
        }
    }

    fn review(kind: &str, object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": kind},
                        "operation": "CREATE", "object": object}
        }))
        .unwrap()
    }

    #[test]
    fn every_container_list_of_every_kind() {
        let pod = json!({"containers": [{"name": "a", "image": "x"}], "initContainers": [{"name": "i", "image": "y"}],
                         "ephemeralContainers": [{"name": "e", "image": "z"}]});
        let cases = [
            ("Pod", json!({"spec": pod}), "/spec"),
            ("PodTemplate", json!({"template": {"spec": pod}}), "/template/spec"),
            ("Deployment", json!({"spec": {"template": {"spec": pod}}}), "/spec/template/spec"),
            ("StatefulSet", json!({"spec": {"template": {"spec": pod}}}), "/spec/template/spec"),
            ("DaemonSet", json!({"spec": {"template": {"spec": pod}}}), "/spec/template/spec"),
            ("ReplicaSet", json!({"spec": {"template": {"spec": pod}}}), "/spec/template/spec"),
            ("ReplicationController", json!({"spec": {"template": {"spec": pod}}}), "/spec/template/spec"),
            ("Job", json!({"spec": {"template": {"spec": pod}}}), "/spec/template/spec"),
            (
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": pod}}}}}),
                "/spec/jobTemplate/spec/template/spec",
            ),
        ];
        for (kind, object, base) in cases {
            let r = Review::parse(&review(kind, object)).unwrap();
            let found = images(&r.kind, r.object.as_ref().unwrap()).unwrap();
            let got: Vec<(&str, &str)> =
                found.iter().map(|f| (f.pointer.as_str(), f.image.as_str())).collect();
            assert_eq!(
                got,
                [
                    (format!("{base}/containers/0/image").as_str(), "x"),
                    (format!("{base}/initContainers/0/image").as_str(), "y"),
                    (format!("{base}/ephemeralContainers/0/image").as_str(), "z"),
                ],
                "{kind}"
            );
        }
    }

    #[test]
    fn bad_documents_say_why() {
        for (body, want) in [
            (&b"not json"[..], "not an AdmissionReview"),
            (
                br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{"uid":"u"}}"#,
                "apiVersion",
            ),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod","request":{"uid":"u"}}"#, "kind"),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "no request"),
            (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#, "no uid"),
            (
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#,
                "not an AdmissionReview",
            ),
        ] {
            let e = Review::parse(body).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let e = images("ConfigMap", &json!({})).unwrap_err();
        assert!(e.contains("\"ConfigMap\"") && e.contains("Deployment"), "{e}");
        let e = images("Pod", &json!({"spec": {"containers": {"a": 1}}})).unwrap_err();
        assert!(e.contains("/spec/containers"), "{e}");
        let e = images("Pod", &json!({"spec": {"containers": [{"image": 3}]}})).unwrap_err();
        assert!(e.contains("/spec/containers/0/image"), "{e}");
        assert_eq!(images("Deployment", &json!({"spec": {}})).unwrap(), vec![]);
        assert_eq!(images("Pod", &json!({"spec": {"containers": [{"name": "no-image"}]}})).unwrap(), vec![]);
    }

    #[test]
    fn answers_in_the_version_asked() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u-9","operation":"DELETE","object":null}}"#;
        let r = Review::parse(body).unwrap();
        assert!(r.object.is_none());
        let a = r.answer(false, Some((403, "no")), None);
        assert_eq!(a["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(a["response"]["uid"], "u-9");
        assert_eq!(a["response"]["status"]["code"], 403);
        let ops = [json!({"op": "replace", "path": "/spec/containers/0/image", "value": "x"})];
        let a = r.answer(true, None, Some(&ops));
        assert_eq!(a["response"]["patchType"], "JSONPatch");
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&raw).unwrap(), json!(ops));
        assert!(r.answer(true, None, Some(&[])).get("response").unwrap().get("patch").is_none());
    }
}
