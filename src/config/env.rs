//! `${NAME}` in a config file is replaced by the environment variable NAME before parsing, so
//! one ConfigMap serves every cluster: Kubernetes puts a Service's ClusterIP in the pods'
//! environment (`KUBE_DNS_UPSTREAM_SERVICE_HOST` for `kube-dns-upstream`), as node-cache's
//! `-upstreamsvc` reads it. An unset variable is an error naming its line; text without `${`
//! is returned as it is.

use std::borrow::Cow;

/// A `${NAME}` whose variable is unset (or not valid UTF-8), with the line it is on.
#[derive(Debug, PartialEq, Eq)]
pub struct Unset {
    pub name: String,
    pub line: usize,
}

/// `text` with every `${NAME}` replaced by NAME's value, read through `lookup`.
pub fn expand<'a>(
    text: &'a str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Cow<'a, str>, Unset> {
    if !text.contains("${") {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            // No closing brace: not a reference; keep the text.
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            out.push_str("${");
            rest = after;
            continue;
        }
        match lookup(name) {
            Some(value) => out.push_str(&value),
            None => {
                let offset = text.len() - rest.len() + start;
                let line = text[..offset].matches('\n').count() + 1;
                return Err(Unset {
                    name: name.to_string(),
                    line,
                });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "KUBE_DNS_UPSTREAM_SERVICE_HOST").then(|| "10.96.0.11".to_string())
    }

    #[test]
    fn references_are_replaced_and_other_text_kept() {
        let text =
            "a: 1\nupstreams: [\"${KUBE_DNS_UPSTREAM_SERVICE_HOST}:53\"]\nb: $x ${not valid}\n";
        assert_eq!(
            expand(text, env).unwrap(),
            "a: 1\nupstreams: [\"10.96.0.11:53\"]\nb: $x ${not valid}\n"
        );
        assert!(matches!(expand("plain: text\n", env), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn an_unset_variable_names_itself_and_its_line() {
        let text = "a: 1\n\nupstreams: [\"${NOPE}\"]\n";
        assert_eq!(
            expand(text, env),
            Err(Unset {
                name: "NOPE".into(),
                line: 3
            })
        );
        assert_eq!(expand("${NOPE}", env).unwrap_err().line, 1);
    }
}
