//! [`Secrets`]: the one place that takes passwords out of text, for database URLs
//! (the CLI's output, [`DatabaseUrl`](crate::DatabaseUrl)'s `Debug`) and Kafka
//! settings (librdkafka's logs and errors).

use percent_encoding::percent_decode_str;

/// Values that must not appear in what is printed or logged, to take out of text.
///
/// A database URL's password may hide in its user info (also with unencoded `/`, `#`
/// or `?`, which break URL parsing) or in a `password=` query parameter, and the
/// errors drivers make from a URL may quote it raw or percent-decoded. So it is not
/// cut out of the URL by its position: every form of it is replaced wherever it
/// appears.
///
/// ```
/// use outbox::Secrets;
///
/// let url = "postgres://app:p%40ss@db/orders";
/// let secrets = Secrets::of_url(url);
/// assert_eq!(secrets.scrub(url), "postgres://app:***@db/orders");
/// assert_eq!(secrets.scrub("login failed for p@ss"), "login failed for ***");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// The secrets `values` (empty ones are ignored).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
        // Longest first, so a secret that contains another is replaced whole.
        values.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        values.dedup();
        Secrets(values)
    }

    /// The password of the database URL `url`, from its user info and its `password`
    /// or `sslpassword` query parameters, each raw and percent-decoded.
    pub fn of_url(url: &str) -> Self {
        let mut found = Vec::new();
        if let (Some(scheme), Some(at)) = (url.find("://"), url.rfind('@'))
            && at > scheme
            && let Some((_, password)) = url[scheme + 3..at].split_once(':')
        {
            found.push(password.to_owned());
        }
        // Query parameters: after the first `?` that follows the host, or anywhere
        // when the URL is malformed; both are searched.
        for part in url.split(['?', '&']) {
            if let Some((name, value)) = part.split_once('=')
                && matches!(
                    name.to_ascii_lowercase().as_str(),
                    "password" | "sslpassword"
                )
            {
                found.push(value.split('#').next().unwrap_or_default().to_owned());
            }
        }
        Self::new(found.into_iter().flat_map(|raw| {
            let decoded = percent_decode_str(&raw).decode_utf8_lossy().into_owned();
            [raw, decoded]
        }))
    }

    /// `text` with every secret replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        self.0.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), "***")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Secrets;

    fn redact(url: &str) -> String {
        Secrets::of_url(url).scrub(url)
    }

    #[test]
    fn passwords_are_replaced_wherever_they_are() {
        for (url, redacted) in [
            (
                "postgres://app:s3cret@db:5432/x",
                "postgres://app:***@db:5432/x",
            ),
            (
                "postgres://app:pa/ss#w?rd@db:5432/x",
                "postgres://app:***@db:5432/x",
            ),
            ("postgres://u:p#ss@h/db", "postgres://u:***@h/db"),
            (
                "postgres://app@db/x?sslmode=require&password=s3cret",
                "postgres://app@db/x?sslmode=require&password=***",
            ),
            ("postgres://app:p%40ss@db/x", "postgres://app:***@db/x"),
            ("postgres://app@db/x", "postgres://app@db/x"),
            ("sqlite::memory:", "sqlite::memory:"),
        ] {
            assert_eq!(redact(url), redacted, "{url}");
        }
    }

    #[test]
    fn decoded_forms_are_replaced_in_errors_too() {
        let secrets = Secrets::of_url("postgres://app:p%40ss@db/x");
        assert_eq!(
            secrets.scrub("password authentication failed for p@ss"),
            "password authentication failed for ***"
        );
    }

    #[test]
    fn a_secret_inside_another_is_replaced_whole() {
        let secrets = Secrets::new(["abc".to_owned(), "xabcx".to_owned(), String::new()]);
        assert_eq!(secrets.scrub("1 xabcx 2 abc"), "1 *** 2 ***");
    }
}
