//! The labels of one metric handle (feature `metrics`): the ones the app
//! gave the layer, cache or store (`metrics_label`), then the metric's own.

use metrics::Label;

/// `given`, then `own`.
pub(crate) fn labels(
    given: &[(String, String)],
    own: &[(&'static str, &'static str)],
) -> Vec<Label> {
    given
        .iter()
        .map(|(key, value)| Label::new(key.clone(), value.clone()))
        .chain(own.iter().map(|(key, value)| Label::new(*key, *value)))
        .collect()
}
