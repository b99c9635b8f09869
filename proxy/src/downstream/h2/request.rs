//! A request's head as its header block is decoded: the checks of RFC 9113 §8.1.1 and §8.3.1,
//! the limits of the header list, and the `Request` it makes.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri, Version};

use super::{ADDED_FIELDS, Body, Limits};
use crate::body::Incoming;
use crate::http1::Names;

/// A request's header list as it is decoded.
pub(super) struct Fields {
    limits: Limits,
    method: Option<Method>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    pub(super) headers: HeaderMap,
    pub(super) content_length: Option<u64>,
    /// Why the request is malformed (RFC 9113 §8.1.1), if it is.
    pub(super) malformed: Option<&'static str>,
    pub(super) pseudo_seen: bool,
    /// Regular fields so far.
    regular: usize,
    size: usize,
    count: usize,
    pub(super) too_large: bool,
}

impl Fields {
    /// The fields of a head to be decoded into `spare` (a map kept from an earlier response)
    /// or a new map with room for a usual request's fields and those the proxy adds.
    pub(super) fn new(limits: Limits, spare: Option<HeaderMap>) -> Self {
        Self {
            limits,
            method: None,
            scheme: None,
            authority: None,
            path: None,
            headers: spare.unwrap_or_else(|| {
                HeaderMap::with_capacity(crate::upstream::h1::HTTP1_HEADER_ROOM + ADDED_FIELDS)
            }),
            content_length: None,
            malformed: None,
            pseudo_seen: false,
            regular: 0,
            size: 0,
            count: 0,
            too_large: false,
        }
    }

    fn malformed(&mut self, reason: &'static str) {
        self.malformed.get_or_insert(reason);
    }

    /// Takes one decoded field; `names` are the connection's, kept from its earlier requests.
    pub(super) fn field(&mut self, names: &mut Names, name: &[u8], value: Bytes, sensitive: bool) {
        self.size += name.len() + value.len() + 32;
        self.count += 1;
        if self.size > self.limits.max_header_list || self.count > self.limits.max_fields {
            self.too_large = true;
        }
        if self.too_large || self.malformed.is_some() {
            return; // decoded on, for the decoder's table, and dropped
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            self.pseudo_seen = true;
            if self.regular > 0 {
                return self.malformed("pseudo-header field after a regular one");
            }
            let slot = match pseudo {
                b"method" => {
                    if self.method.is_some() {
                        return self.malformed("repeated :method");
                    }
                    match Method::from_bytes(&value) {
                        Ok(method) => self.method = Some(method),
                        Err(_) => self.malformed("invalid :method"),
                    }
                    return;
                }
                b"scheme" => &mut self.scheme,
                b"authority" => &mut self.authority,
                b"path" => &mut self.path,
                _ => return self.malformed("unknown pseudo-header field"),
            };
            if slot.is_some() {
                return self.malformed("repeated pseudo-header field");
            }
            *slot = Some(value);
            return;
        }
        let index = self.regular;
        self.regular += 1;
        if name.iter().any(u8::is_ascii_uppercase) {
            return self.malformed("upper-case field name");
        }
        let Ok((name, _)) = names.name(index, name) else {
            return self.malformed("invalid field name");
        };
        if value.first().is_some_and(|b| *b == b' ' || *b == b'\t')
            || value.last().is_some_and(|b| *b == b' ' || *b == b'\t')
        {
            return self.malformed("field value with surrounding whitespace");
        }
        let Ok(mut value) = HeaderValue::from_maybe_shared(value) else {
            return self.malformed("invalid field value");
        };
        match name {
            http::header::CONNECTION | http::header::TRANSFER_ENCODING | http::header::UPGRADE => {
                return self.malformed("connection-specific field");
            }
            http::header::TE if value.as_bytes() != b"trailers" => {
                return self.malformed("te other than trailers");
            }
            http::header::CONTENT_LENGTH => {
                let length = crate::http1::parse_length(value.as_bytes());
                match (length, self.content_length) {
                    (Some(n), None) => self.content_length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => return self.malformed("invalid content-length"),
                }
            }
            _ if name.as_str() == "keep-alive" || name.as_str() == "proxy-connection" => {
                return self.malformed("connection-specific field");
            }
            _ => {}
        }
        value.set_sensitive(sensitive);
        self.headers.append(name, value);
    }

    /// The request, if its pseudo-header fields make one (RFC 9113 §8.3.1); else why not.
    pub(super) fn request(self, body: Body) -> Result<Request<Incoming>, &'static str> {
        let method = self.method.ok_or("no :method")?;
        let mut parts = http::uri::Parts::default();
        if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() {
                return Err("CONNECT with :scheme or :path");
            }
            let authority = self.authority.ok_or("CONNECT without :authority")?;
            parts.authority =
                Some(Authority::from_maybe_shared(authority).map_err(|_| "invalid :authority")?);
        } else {
            let path = self.path.filter(|p| !p.is_empty()).ok_or("no :path")?;
            let scheme = self.scheme.ok_or("no :scheme")?;
            if let Some(authority) = self.authority {
                parts.scheme = Some(match &scheme[..] {
                    b"http" => Scheme::HTTP,
                    b"https" => Scheme::HTTPS,
                    other => Scheme::try_from(other).map_err(|_| "invalid :scheme")?,
                });
                parts.authority = Some(
                    Authority::from_maybe_shared(authority).map_err(|_| "invalid :authority")?,
                );
            }
            parts.path_and_query =
                Some(PathAndQuery::from_maybe_shared(path).map_err(|_| "invalid :path")?);
        }
        let uri = Uri::from_parts(parts).map_err(|_| "invalid request target")?;
        let mut headers = self.headers;
        headers.reserve(ADDED_FIELDS);
        let mut request = Request::new(Incoming::Left(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = headers;
        Ok(request)
    }
}
