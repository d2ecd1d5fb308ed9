//! [`DatabaseUrl`]: a database URL that keeps its password out of `Debug` output.

use crate::secrets::Secrets;

/// A database URL whose password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        DatabaseUrl(url)
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        DatabaseUrl(url.to_owned())
    }
}

impl std::fmt::Debug for DatabaseUrl {
    /// The URL with its password, in every form, replaced by `***` (see [`Secrets`]).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", Secrets::of_url(&self.0).scrub(&self.0))
    }
}
