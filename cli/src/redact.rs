//! Keeping database passwords out of what the command prints.
//!
//! A URL's password may hide in its user info (also with unencoded `/`, `#` or `?`,
//! which break URL parsing) or in a `password=` query parameter, and the errors that
//! sea-orm and sqlx make from a URL may quote any part of it, raw or percent-decoded.
//! So the password is not cut out of the URL by its position: every text the command
//! prints about the connection has every form of it replaced.

/// The secrets of one database URL.
#[derive(Debug, Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    /// The password of `url`, from its user info and its `password` or `sslpassword`
    /// query parameters, each raw and percent-decoded.
    pub(crate) fn of_url(url: &str) -> Self {
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
        let mut secrets: Vec<String> = found
            .into_iter()
            .flat_map(|raw| {
                let decoded = percent_decode(&raw);
                [raw, decoded]
            })
            .filter(|secret| !secret.is_empty())
            .collect();
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets.dedup();
        Secrets(secrets)
    }

    /// `text` with every secret replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.0.iter().fold(text.to_owned(), |text, secret| {
            text.replace(secret.as_str(), "***")
        })
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&high), Some(&low)) if hex(high).is_some() && hex(low).is_some() => {
                let value = hex(high).unwrap_or(0) * 16 + hex(low).unwrap_or(0);
                decoded.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (byte, _, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
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
}
