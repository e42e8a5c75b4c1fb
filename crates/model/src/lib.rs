//! Every message between CloudMart services, in JSON.
//!
//! The order, the error body, `/health` and `/ready`, the notification announcing it (the same body over HTTP and
//! RabbitMQ), the notification state and the headers the hops agree on live
//! here once, so a sender and its receiver cannot drift apart. A state is an
//! enum that serialises to the strings stores already hold (`"pending"`,
//! `"notified"`), and every field is written at insert, which behaves the
//! same on every store.

use serde::{Deserialize, Serialize};

mod health;

pub use health::{
    CHECK_OK, DownstreamReadiness, ErrorBody, ErrorDetail, Liveness, Readiness, ReadyStatus,
    SystemHealth, SystemStatus,
};

/// Largest quantity of one line.
pub const MAX_QUANTITY: u32 = 1000;
/// Most lines in one order.
pub const MAX_ITEMS: usize = 50;
/// Longest item name, in characters.
pub const MAX_ITEM_LEN: usize = 100;

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    /// What is ordered, e.g. `laptop`.
    pub item: String,
    /// How many, 1 to [`MAX_QUANTITY`].
    pub quantity: u32,
}

/// Where an order's notification is. Stored and sent as the lowercase
/// name, the same strings the stores held before this was an enum, so
/// existing MongoDB documents and data files still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationState {
    /// Not announced yet; the relay announces it if the request path did not.
    Pending,
    /// RabbitMQ confirmed the `order.created` message; notification-service
    /// will deliver it (AMQP mode).
    Published,
    /// notification-service accepted it over HTTP (HTTP mode).
    Notified,
}

impl NotificationState {
    /// Every state, in the order an order goes through them.
    pub const ALL: [Self; 3] = [Self::Pending, Self::Published, Self::Notified];

    /// The stored string, for store queries that filter on the state; the
    /// same string serde writes (a unit test holds the two together).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Published => "published",
            Self::Notified => "notified",
        }
    }
}

impl std::fmt::Display for NotificationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of `PATCH /orders/{id}/notification` at database-service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationUpdate {
    /// The state to record.
    pub notification: NotificationState,
}

/// The announcement that an order was placed, which notification-service
/// turns into a message to the customer. order-service sends the same body
/// to `POST /notify` (HTTP mode) and as an `order.created` message (AMQP
/// mode), and notification-service reads both with this type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    /// The order; notification-service delivers once per id.
    pub order_id: String,
    /// Who to tell.
    pub customer: String,
    /// What they ordered.
    #[serde(default)]
    pub items: Vec<OrderItem>,
}

impl From<&Order> for OrderCreated {
    fn from(order: &Order) -> Self {
        Self {
            order_id: order.id.clone(),
            customer: order.customer.clone(),
            items: order.items.clone(),
        }
    }
}

/// notification-service's 202 answer to `POST /notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyReceipt {
    /// The order.
    pub order_id: String,
    /// Always [`NotificationState::Notified`]: accepted, now or before.
    pub status: NotificationState,
    /// The order had been notified already, so nothing was sent this time.
    pub duplicate: bool,
}

/// The body of `POST /orders` at order-service, as api-service sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateOrder {
    /// The lines, already checked by api-service and checked again.
    pub items: Vec<OrderItem>,
    /// Who places it: the subject of the caller's token; `guest` when absent.
    #[serde(default)]
    pub customer: Option<String>,
}

/// Request header carrying a client's idempotency key, passed from the
/// gateway to order-service, which stores it with the order.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Response header set to `true` when a create answered with the order a
/// previous request with the same idempotency key created. Every hop passes
/// it on so the client sees it.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The customer of an order placed without a token, and the subject
/// auth-service gives such a caller. No account may take this name.
pub const GUEST: &str = "guest";
/// The role claim that may read every customer's orders.
pub const ROLE_ADMIN: &str = "admin";
/// The role of every other account.
pub const ROLE_CUSTOMER: &str = "customer";

/// auth-service's 200 answer to `POST /auth/validate`: who sent a request.
/// An invalid token gets a 401 instead, so `valid` is always true here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The token checked out, or there was none (a guest).
    pub valid: bool,
    /// No token was sent; `subject` and `role` are both [`GUEST`].
    #[serde(default)]
    pub guest: bool,
    /// The user name, or [`GUEST`].
    pub subject: String,
    /// [`ROLE_ADMIN`], [`ROLE_CUSTOMER`] or, for a guest, [`GUEST`].
    #[serde(default)]
    pub role: String,
    /// When the token expires, in seconds since the epoch; absent for a guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl Identity {
    /// A caller without a token.
    pub fn guest() -> Self {
        Self {
            valid: true,
            guest: true,
            subject: GUEST.to_owned(),
            role: GUEST.to_owned(),
            expires_at: None,
        }
    }

    /// Whether this caller may read every customer's orders.
    pub fn is_admin(&self) -> bool {
        !self.guest && self.role == ROLE_ADMIN
    }
}

/// An order to store; the id and idempotency key come from the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    /// Time-ordered id chosen by order-service.
    pub id: String,
    /// Who placed it (`guest` or a user name).
    pub customer: String,
    /// The lines.
    pub items: Vec<OrderItem>,
    /// Makes a repeated create return the first order instead of a second one.
    pub idempotency_key: String,
}

impl NewOrder {
    /// The order as a store first keeps it: confirmed, its notification
    /// still pending, created at `created_at`.
    pub fn into_order(self, created_at: String) -> Order {
        Order {
            id: self.id,
            customer: self.customer,
            items: self.items,
            status: "confirmed".to_owned(),
            notification: NotificationState::Pending,
            idempotency_key: self.idempotency_key,
            created_at,
        }
    }
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// A UUIDv7, so ids sort by creation time.
    pub id: String,
    /// Who placed it.
    pub customer: String,
    /// The lines.
    pub items: Vec<OrderItem>,
    /// Always `confirmed` once stored.
    pub status: String,
    /// Pending, then published (AMQP mode) or notified (HTTP mode).
    pub notification: NotificationState,
    /// The key it was created with.
    pub idempotency_key: String,
    /// RFC 3339 creation time, set by the store.
    pub created_at: String,
}

/// One page of orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPage {
    /// The orders.
    pub orders: Vec<Order>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `?limit=&cursor=&customer=` of a listing, as every hop of `GET /orders`
/// takes it. api-service sets `customer` from the caller's token (an admin
/// may choose it); a client's own `customer` is never trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PageQuery {
    /// Page size, 1 to 100 (20 when absent).
    pub limit: Option<u32>,
    /// The id of the last order of the previous page.
    pub cursor: Option<String>,
    /// Only this customer's orders; everyone's when absent.
    pub customer: Option<String>,
}

impl PageQuery {
    /// `path` with the validated query appended, for the next hop.
    pub fn forward(&self, path: &str) -> Result<String, String> {
        let limit = self.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(format!("limit must be from 1 to 100, got {limit}"));
        }
        let mut out = format!("{path}?limit={limit}");
        if let Some(c) = self.cursor.as_deref() {
            out.push_str("&cursor=");
            out.push_str(&encode_component(c));
        }
        if let Some(c) = self.customer.as_deref() {
            out.push_str("&customer=");
            out.push_str(&encode_component(c));
        }
        Ok(out)
    }
}

/// Percent-encodes an id or a query value for a path between services.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks the lines of an order, describing the first problem found.
pub fn validate_items(items: &[OrderItem]) -> Result<(), String> {
    if items.is_empty() {
        return Err("an order needs at least one item".to_owned());
    }
    if items.len() > MAX_ITEMS {
        return Err(format!(
            "an order has at most {MAX_ITEMS} items, got {}",
            items.len()
        ));
    }
    for (i, line) in items.iter().enumerate() {
        let name = line.item.trim();
        if name.is_empty() {
            return Err(format!("items[{i}].item must not be empty"));
        }
        if name.chars().count() > MAX_ITEM_LEN {
            return Err(format!(
                "items[{i}].item is longer than {MAX_ITEM_LEN} characters"
            ));
        }
        if line.quantity == 0 || line.quantity > MAX_QUANTITY {
            return Err(format!(
                "items[{i}].quantity must be from 1 to {MAX_QUANTITY}, got {}",
                line.quantity
            ));
        }
    }
    Ok(())
}

/// The current time as RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339(now.as_secs(), now.subsec_millis())
}

/// Formats seconds since the epoch (UTC) as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn format_rfc3339(secs: u64, millis: u32) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), valid for any date after 1970.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_states_serialise_to_the_stored_strings() {
        let wire: Vec<String> = NotificationState::ALL
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        assert_eq!(wire, [r#""pending""#, r#""published""#, r#""notified""#]);
        for state in NotificationState::ALL {
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{state}\"")
            );
            let back: NotificationState =
                serde_json::from_str(&format!("\"{}\"", state.as_str())).unwrap();
            assert_eq!(back, state);
        }
    }

    #[test]
    fn an_unknown_or_differently_cased_state_is_refused() {
        for bad in [r#""sent""#, r#""Pending""#, r#""""#, "1"] {
            assert!(
                serde_json::from_str::<NotificationState>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_notification_update_body_is_one_field() {
        let body = NotificationUpdate {
            notification: NotificationState::Published,
        };
        assert_eq!(
            serde_json::to_value(body).unwrap(),
            serde_json::json!({"notification": "published"})
        );
    }

    #[test]
    fn an_order_created_message_round_trips_and_names_the_order() {
        let order = NewOrder {
            id: "0193-a".to_owned(),
            customer: "alice".to_owned(),
            items: vec![line("laptop", 2)],
            idempotency_key: "k".to_owned(),
        }
        .into_order("2026-12-02T00:00:00.000Z".to_owned());
        let message = OrderCreated::from(&order);
        let wire = serde_json::to_value(&message).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({
                "order_id": "0193-a",
                "customer": "alice",
                "items": [{"item": "laptop", "quantity": 2}],
            })
        );
        assert_eq!(
            serde_json::from_value::<OrderCreated>(wire).unwrap(),
            message
        );
        // Senders before items were added still parse.
        let bare: OrderCreated =
            serde_json::from_str(r#"{"order_id":"o","customer":"guest"}"#).unwrap();
        assert!(bare.items.is_empty());
    }

    #[test]
    fn a_new_order_is_stored_with_its_notification_pending() {
        let order = NewOrder {
            id: "o".to_owned(),
            customer: GUEST.to_owned(),
            items: vec![line("laptop", 1)],
            idempotency_key: "k".to_owned(),
        }
        .into_order(now_rfc3339());
        assert_eq!(order.notification, NotificationState::Pending);
        let stored = serde_json::to_value(&order).unwrap();
        assert_eq!(stored["notification"], "pending");
    }

    #[test]
    fn a_guest_is_never_an_admin_and_has_no_expiry_on_the_wire() {
        let guest = Identity::guest();
        assert!(!guest.is_admin());
        assert_eq!(
            serde_json::to_value(&guest).unwrap(),
            serde_json::json!({"valid": true, "guest": true, "subject": "guest", "role": "guest"})
        );
        let admin: Identity = serde_json::from_str(
            r#"{"valid":true,"guest":false,"subject":"root","role":"admin","expires_at":1}"#,
        )
        .unwrap();
        assert!(admin.is_admin());
    }

    #[test]
    fn encode_component_escapes_reserved_characters() {
        assert_eq!(encode_component("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(encode_component("0193-abc_~."), "0193-abc_~.");
    }

    fn line(item: &str, quantity: u32) -> OrderItem {
        OrderItem {
            item: item.to_owned(),
            quantity,
        }
    }

    #[test]
    fn quantities_outside_one_to_a_thousand_are_rejected() {
        assert!(validate_items(&[line("laptop", 1)]).is_ok());
        assert!(validate_items(&[line("laptop", 1000)]).is_ok());
        assert!(
            validate_items(&[line("laptop", 0)])
                .unwrap_err()
                .contains("quantity")
        );
        assert!(
            validate_items(&[line("laptop", 1001)])
                .unwrap_err()
                .contains("1001")
        );
        assert!(validate_items(&[line(" ", 1)]).is_err());
        assert!(validate_items(&[]).is_err());
    }

    #[test]
    fn page_queries_are_checked_and_encoded() {
        let q = PageQuery {
            limit: Some(5),
            cursor: Some("a b".to_owned()),
            customer: Some("alice".to_owned()),
        };
        assert_eq!(
            q.forward("/orders").unwrap(),
            "/orders?limit=5&cursor=a%20b&customer=alice"
        );
        assert_eq!(
            PageQuery::default().forward("/orders").unwrap(),
            "/orders?limit=20"
        );
        let big = PageQuery {
            limit: Some(101),
            ..PageQuery::default()
        };
        assert!(big.forward("/orders").unwrap_err().contains("got 101"));
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(
            format_rfc3339(1_795_000_000, 999),
            "2026-11-18T11:06:40.999Z"
        );
    }
}
