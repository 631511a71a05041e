//! Label selectors (`matchLabels` and `matchExpressions`), parsed once and matched many times.
//!
//! Workload controllers, Services, the scheduler's affinity rules and the validator all ask
//! "does this selector pick these labels?"; they share this one implementation.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::names;
use crate::path::FieldPath;
use crate::validate::FieldProblem;

/// How one requirement compares a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    /// The label exists and its value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label exists.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One condition on one label key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The comparison.
    pub operator: Operator,
    /// The values for `In` and `NotIn`.
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A parsed label selector: all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// A selector that matches labels equal to `labels` on every key (a Service's selector).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Self {
        Self {
            requirements: labels
                .iter()
                .map(|(key, value)| Requirement {
                    key: key.clone(),
                    operator: Operator::In,
                    values: vec![value.clone()],
                })
                .collect(),
        }
    }

    /// Parses a Kubernetes `LabelSelector`, reporting every malformed part under `path`.
    pub fn parse(selector: &LabelSelector, path: &FieldPath) -> Result<Self, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let mut requirements = Vec::new();
        if let Some(labels) = &selector.match_labels {
            let labels_path = path.field("matchLabels");
            for (key, value) in labels {
                check_label(&labels_path, key, value, &mut problems);
                requirements.push(Requirement {
                    key: key.clone(),
                    operator: Operator::In,
                    values: vec![value.clone()],
                });
            }
        }
        for (i, expression) in selector.match_expressions.iter().flatten().enumerate() {
            let at = path.field("matchExpressions").index(i);
            if let Err(why) = names::qualified_name(&expression.key) {
                problems.push(FieldProblem::new(at.field("key"), why));
            }
            let values = expression.values.clone().unwrap_or_default();
            let operator = match expression.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    problems.push(FieldProblem::new(
                        at.field("operator"),
                        format!(
                            "{other:?} is not an operator: use In, NotIn, Exists or DoesNotExist"
                        ),
                    ));
                    continue;
                }
            };
            match operator {
                Operator::In | Operator::NotIn if values.is_empty() => problems.push(
                    FieldProblem::new(at.field("values"), "must not be empty for In and NotIn"),
                ),
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    problems.push(FieldProblem::new(
                        at.field("values"),
                        "must be empty for Exists and DoesNotExist",
                    ))
                }
                _ => {}
            }
            for (j, value) in values.iter().enumerate() {
                if let Err(why) = names::label_value(value) {
                    problems.push(FieldProblem::new(at.field("values").index(j), why));
                }
            }
            requirements.push(Requirement {
                key: expression.key.clone(),
                operator,
                values,
            });
        }
        if problems.is_empty() {
            Ok(Self { requirements })
        } else {
            Err(problems)
        }
    }

    /// A selector that matches no labels at all (a missing `labelSelector` in an affinity
    /// term selects no pod).
    pub fn nothing() -> Self {
        Self {
            requirements: vec![Requirement {
                key: String::new(),
                operator: Operator::In,
                values: Vec::new(),
            }],
        }
    }

    /// Reads the text form (`app=web,tier in (front,edge),!canary`), as `kubectl -l` and
    /// kustomize's `labelSelector` take it; why not, in one line.
    pub fn parse_text(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        let mut depth = 0usize;
        let mut start = 0;
        for (at, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    terms.push(&text[start..at]);
                    start = at + 1;
                }
                _ => {}
            }
        }
        terms.push(&text[start..]);
        let mut requirements = Vec::new();
        for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
            requirements.push(parse_term(term)?);
        }
        Ok(Self { requirements })
    }

    /// True when the selector has no requirement (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// True when every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// One requirement of a selector's text form.
fn parse_term(term: &str) -> Result<Requirement, String> {
    let requirement = |key: &str, operator, values: Vec<String>| {
        let key = key.trim();
        names::qualified_name(key).map_err(|why| format!("selector {term:?}: key {why}"))?;
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    };
    if let Some(key) = term.strip_prefix('!') {
        return requirement(key, Operator::DoesNotExist, Vec::new());
    }
    for (word, operator) in [(" notin ", Operator::NotIn), (" in ", Operator::In)] {
        if let Some((key, rest)) = term.split_once(word) {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| format!("selector {term:?}: values go in parentheses"))?;
            let values = inner
                .split(',')
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .collect();
            return requirement(key, operator, values);
        }
    }
    if let Some((key, value)) = term.split_once("!=") {
        return requirement(key, Operator::NotIn, vec![value.trim().to_string()]);
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return requirement(key, Operator::In, vec![value.trim().to_string()]);
    }
    requirement(term, Operator::Exists, Vec::new())
}

/// Checks one label's key and value, reporting under `path[key]`.
pub(crate) fn check_label(
    path: &FieldPath,
    key: &str,
    value: &str,
    problems: &mut Vec<FieldProblem>,
) {
    if let Err(why) = names::qualified_name(key) {
        problems.push(FieldProblem::new(path.key(key), why));
    }
    if let Err(why) = names::label_value(value) {
        problems.push(FieldProblem::new(path.key(key), why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_the_text_form_as_kubectl_does() {
        let selector =
            Selector::parse_text("app=web, tier in (front, edge),!canary,zone").expect("valid");
        assert!(selector.matches(&labels(&[("app", "web"), ("tier", "edge"), ("zone", "a")])));
        assert!(!selector.matches(&labels(&[("app", "web"), ("tier", "back"), ("zone", "a")])));
        assert!(!selector.matches(&labels(&[
            ("app", "web"),
            ("tier", "edge"),
            ("zone", "a"),
            ("canary", "1")
        ])));
        let not = Selector::parse_text("app!=web,tier notin (back)").expect("valid");
        assert!(not.matches(&labels(&[])));
        assert!(!not.matches(&labels(&[("app", "web")])));
        assert!(Selector::parse_text("").expect("empty").is_empty());
        assert!(Selector::parse_text("tier in front").is_err());
        assert!(Selector::parse_text("bad key=1").is_err());
    }

    #[test]
    fn matches_labels_and_expressions() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["front".into(), "edge".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let parsed = Selector::parse(&selector, &FieldPath::parse("spec.selector")).expect("valid");
        assert!(parsed.matches(&labels(&[("app", "web"), ("tier", "edge")])));
        assert!(!parsed.matches(&labels(&[("app", "web"), ("tier", "back")])));
        assert!(!parsed.matches(&labels(&[("app", "web"), ("tier", "edge"), ("canary", "")])));
        assert!(!parsed.matches(&labels(&[("tier", "edge")])));
    }

    #[test]
    fn reports_malformed_expressions_by_path() {
        let selector = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "Within".into(),
                values: None,
            }]),
        };
        let problems =
            Selector::parse(&selector, &FieldPath::parse("spec.selector")).expect_err("invalid");
        assert_eq!(
            problems[0].path.to_string(),
            "spec.selector.matchExpressions[0].operator"
        );
    }
}
