//! [`ServiceError`]: Go Micro's error shape — an id, an HTTP-like code, a detail and a status —
//! preserved end to end between a handler and its caller.

use std::fmt;

use micro_runtime::ContentType;
use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An error from a service call, as Go Micro has it: who raised it (`id`, e.g. `"greeter"` or
/// `"micro.client"`), an HTTP-like `code` (400, 401, 403, 404, 408, 409, 500, 503…), a `detail`
/// for humans and the code's `status` text.
///
/// Handlers return it; it travels back to the caller unchanged. The client makes its own for
/// what goes wrong on the way (timeout → 408, no node reachable → 503, …).
///
/// ```
/// use micro_service::ServiceError;
///
/// let err = ServiceError::not_found("greeter", "no user named ada");
/// assert_eq!(err.code, 404);
/// assert_eq!(err.status, "Not Found");
/// assert_eq!(err.to_string(), "greeter 404 Not Found: no user named ada");
/// ```
///
/// Typed details travel with it as JSON ([`with_details`](Self::with_details),
/// [`details`](Self::details)):
///
/// ```
/// use micro_service::ServiceError;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct OutOfStock { item: String, left: u32 }
///
/// let err = ServiceError::conflict("inventory", "not enough pears")
///     .with_details(&OutOfStock { item: "pear".into(), left: 2 });
/// assert_eq!(err.details::<OutOfStock>(), Some(OutOfStock { item: "pear".into(), left: 2 }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ServiceError {
    /// Who raised it: a service name, or `micro.client` / `micro.server` for the framework.
    pub id: String,
    /// An HTTP-like status code.
    pub code: u16,
    /// What went wrong, for humans.
    pub detail: String,
    /// The code's reason phrase (`"Not Found"`).
    pub status: String,
    /// Typed details as JSON text, if any ([`with_details`](Self::with_details)). An error
    /// without details is encoded as before; with details, JSON has a `details` field and
    /// bincode puts them at the end of `detail`, after a NUL, so the layout stays the one older
    /// nodes read (they see the details as part of `detail`). A `detail` of its own that holds
    /// a NUL would be split there.
    pub details: Option<String>,
}

const FIELDS: &[&str] = &["id", "code", "detail", "status", "details"];

/// Between `detail` and the details in the compact (binary) form of an error with details.
const DETAILS_SEPARATOR: char = '\0';

impl Serialize for ServiceError {
    /// In a self-describing format (JSON), `details` is a fifth field, written only when set.
    /// In a compact one (bincode) the four fields keep their layout, so errors travel inside
    /// any value as before and older nodes read them: details ride at the end of `detail`,
    /// after a NUL (which an older node shows as part of the text).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let human = serializer.is_human_readable();
        let len = if human && self.details.is_some() {
            5
        } else {
            4
        };
        let mut s = serializer.serialize_struct("ServiceError", len)?;
        s.serialize_field("id", &self.id)?;
        s.serialize_field("code", &self.code)?;
        match &self.details {
            Some(details) if !human => {
                let joined = format!("{}{DETAILS_SEPARATOR}{details}", self.detail);
                s.serialize_field("detail", &joined)?;
            }
            _ => s.serialize_field("detail", &self.detail)?,
        }
        s.serialize_field("status", &self.status)?;
        match &self.details {
            Some(details) if human => s.serialize_field("details", details)?,
            _ => s.skip_field("details")?,
        }
        s.end()
    }
}

/// A `detail` as read: details after a NUL, if any.
fn split_details(mut detail: String) -> (String, Option<String>) {
    match detail.find(DETAILS_SEPARATOR) {
        Some(at) => {
            let details = detail[at + DETAILS_SEPARATOR.len_utf8()..].to_owned();
            detail.truncate(at);
            (detail, Some(details))
        }
        None => (detail, None),
    }
}

impl<'de> Deserialize<'de> for ServiceError {
    /// Reads either form [`Serialize`](ServiceError#impl-Serialize-for-ServiceError) writes,
    /// and what nodes from before details wrote.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("ServiceError", FIELDS, ErrorVisitor)
    }
}

struct ErrorVisitor;

impl<'de> Visitor<'de> for ErrorVisitor {
    type Value = ServiceError;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a service error")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ServiceError, A::Error> {
        let missing = |i| de::Error::invalid_length(i, &"a service error");
        let id = seq.next_element()?.ok_or_else(|| missing(0))?;
        let code = seq.next_element()?.ok_or_else(|| missing(1))?;
        let detail = seq.next_element()?.ok_or_else(|| missing(2))?;
        let status = seq.next_element()?.ok_or_else(|| missing(3))?;
        let (detail, details) = split_details(detail);
        Ok(ServiceError {
            id,
            code,
            detail,
            status,
            details,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ServiceError, A::Error> {
        let (mut id, mut code, mut detail, mut status, mut details) =
            (None, None, None, None, None);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "id" => id = Some(map.next_value()?),
                "code" => code = Some(map.next_value()?),
                "detail" => detail = Some(map.next_value()?),
                "status" => status = Some(map.next_value()?),
                "details" => details = map.next_value()?,
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        let detail = detail.ok_or_else(|| de::Error::missing_field("detail"))?;
        let (detail, joined) = split_details(detail);
        Ok(ServiceError {
            id: id.ok_or_else(|| de::Error::missing_field("id"))?,
            code: code.ok_or_else(|| de::Error::missing_field("code"))?,
            detail,
            status: status.ok_or_else(|| de::Error::missing_field("status"))?,
            details: details.or(joined),
        })
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}: {}",
            self.id, self.code, self.status, self.detail
        )
    }
}

/// The id the client puts on the errors it makes itself.
pub(crate) const CLIENT_ID: &str = "micro.client";
/// The id the server side puts on the errors it makes itself.
pub(crate) const SERVER_ID: &str = "micro.server";

impl ServiceError {
    /// An error with any code; the status text follows from the code.
    pub fn new(id: impl Into<String>, code: u16, detail: impl Into<String>) -> Self {
        ServiceError {
            id: id.into(),
            code,
            detail: detail.into(),
            status: status_text(code).to_owned(),
            details: None,
        }
    }

    /// With typed details, serialized as JSON: the caller reads them back with
    /// [`details`](Self::details). Details that do not serialize (a map with non-string keys)
    /// are left out, with a warning.
    #[must_use]
    pub fn with_details<T: Serialize + ?Sized>(mut self, details: &T) -> Self {
        match ContentType::Json.encode(details).map(String::from_utf8) {
            Ok(Ok(json)) => self.details = Some(json),
            Ok(Err(err)) => tracing::warn!(error = %err, "error details are not UTF-8"),
            Err(err) => tracing::warn!(error = %err, "error details did not serialize"),
        }
        self
    }

    /// The details as a `T`, if the error has details and they are a `T`.
    pub fn details<T: DeserializeOwned>(&self) -> Option<T> {
        let json = self.details.as_deref()?;
        ContentType::Json.decode(json.as_bytes()).ok()
    }

    /// 400: the request is malformed (it did not decode, or failed validation).
    pub fn bad_request(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 400, detail)
    }

    /// 401: the caller is not authenticated.
    pub fn unauthorized(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 401, detail)
    }

    /// 403: the caller may not do this.
    pub fn forbidden(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 403, detail)
    }

    /// 404: the thing asked for does not exist (a record, a service, an endpoint).
    pub fn not_found(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 404, detail)
    }

    /// 408: the call's deadline passed.
    pub fn timeout(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 408, detail)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 409, detail)
    }

    /// 500: something failed inside the service (a handler panicked, a response did not encode).
    pub fn internal(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 500, detail)
    }

    /// 503: the service cannot take the call now (overloaded, draining, or no node reachable);
    /// the call was not run and can be retried elsewhere.
    pub fn unavailable(id: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(id, 503, detail)
    }

    /// Whether this is a 408.
    pub fn is_timeout(&self) -> bool {
        self.code == 408
    }
}

/// The reason phrase of an HTTP-like code.
fn status_text(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Runtime failures seen by services and the client (starting a service, a stream's
/// transport), with the nearest code.
impl From<micro_runtime::Error> for ServiceError {
    fn from(err: micro_runtime::Error) -> Self {
        use micro_runtime::Error as E;
        let code = match &err {
            E::Timeout(_) | E::DeadlinePassed => 408,
            E::NotFound(_) | E::NotExposed(_) => 404,
            E::NameTaken(_) => 409,
            E::Untrusted { .. } => 403,
            E::StreamClosed(_) | E::StreamCancelled(_) => 499,
            E::Unavailable(_)
            | E::MailboxFull { .. }
            | E::NoRoute(_)
            | E::NodeLost(_)
            | E::NodeStopped(_)
            | E::ActorStopped(_) => 503,
            _ => 500,
        };
        ServiceError::new("micro", code, err.to_string())
    }
}

/// Registry failures, with the nearest code (an unknown service is a 404).
impl From<micro_registry::RegistryError> for ServiceError {
    fn from(err: micro_registry::RegistryError) -> Self {
        match err {
            micro_registry::RegistryError::Runtime(runtime) => {
                let mut mapped = ServiceError::from(runtime);
                mapped.id = "micro.registry".to_owned();
                mapped
            }
            micro_registry::RegistryError::NotFound(name) => {
                ServiceError::not_found("micro.registry", format!("service {name:?} not found"))
            }
            other => ServiceError::internal("micro.registry", other.to_string()),
        }
    }
}

/// Broker failures (a service's subscribers), with the nearest code.
impl From<micro_broker::BrokerError> for ServiceError {
    fn from(err: micro_broker::BrokerError) -> Self {
        use micro_broker::BrokerError as E;
        match err {
            E::Runtime(runtime) => {
                let mut mapped = ServiceError::from(runtime);
                mapped.id = "micro.broker".to_owned();
                mapped
            }
            E::InvalidTopic(_) | E::Encode { .. } | E::Decode { .. } => {
                ServiceError::bad_request("micro.broker", err.to_string())
            }
            E::Full { .. } | E::Overloaded(_) | E::Closed(_) => {
                ServiceError::unavailable("micro.broker", err.to_string())
            }
            other => ServiceError::internal("micro.broker", other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::ServiceError;

    /// The error as nodes before `details` wrote and read it.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Before {
        id: String,
        code: u16,
        detail: String,
        status: String,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct OutOfStock {
        item: String,
        left: u32,
    }

    #[test]
    fn an_error_without_details_keeps_its_wire_form() {
        use micro_runtime::ContentType;
        let err = ServiceError::conflict("inventory", "no pears");
        let before = Before {
            id: "inventory".into(),
            code: 409,
            detail: "no pears".into(),
            status: "Conflict".into(),
        };
        for ct in [ContentType::Bincode, ContentType::Json] {
            let bytes = ct.encode(&err).unwrap();
            assert_eq!(bytes, ct.encode(&before).unwrap(), "{ct}");
            assert_eq!(ct.decode::<Before>(&bytes).unwrap(), before, "{ct}");
            assert_eq!(ct.decode::<ServiceError>(&bytes).unwrap(), err, "{ct}");
            // Inside the reply it travels in, where it is the last thing.
            let reply: Result<(), ServiceError> = Err(err.clone());
            let bytes = ct.encode(&reply).unwrap();
            assert_eq!(
                ct.decode::<Result<(), ServiceError>>(&bytes).unwrap(),
                reply
            );
        }
    }

    #[test]
    fn details_round_trip_in_either_codec() {
        use micro_runtime::ContentType;
        let stock = OutOfStock {
            item: "pear".into(),
            left: 2,
        };
        let err = ServiceError::conflict("inventory", "no pears").with_details(&stock);
        assert_eq!(err.details::<OutOfStock>(), Some(stock));
        assert_eq!(err.details::<u32>(), None, "details of another type");
        assert_eq!(
            ServiceError::conflict("x", "y").details::<OutOfStock>(),
            None
        );
        for ct in [ContentType::Bincode, ContentType::Json] {
            let reply: Result<(), ServiceError> = Err(err.clone());
            let bytes = ct.encode(&reply).unwrap();
            assert_eq!(
                ct.decode::<Result<(), ServiceError>>(&bytes).unwrap(),
                reply
            );
        }
    }

    #[test]
    fn runtime_waits_that_ran_out_are_timeouts() {
        for err in [
            micro_runtime::Error::Timeout(Duration::from_secs(1)),
            micro_runtime::Error::DeadlinePassed,
        ] {
            assert_eq!(ServiceError::from(err).code, 408);
        }
        let unknown = ServiceError::from(micro_runtime::Error::NotFound("x".into()));
        assert_eq!(unknown.code, 404);
    }
}
