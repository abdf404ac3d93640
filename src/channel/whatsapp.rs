//! The WhatsApp Cloud API as a [`Channel`]: a template message — or, inside the
//! customer-service window, a free-form session message — POSTed to `/{phone-number-id}/messages`; Meta's error codes classified by
//! [`crate::policy::classify`]; priced per category and market (reference §8).

use async_trait::async_trait;

use super::{Answer, Channel, Endpoint, Prepared};
use crate::domain::{Category, ChannelKind, PhoneNumber, SenderId};
use crate::graph::wire::{SendSession, SendTemplate};
use crate::graph::{GraphClient, SendResult};
use crate::policy::classify::classify_code;
use crate::policy::cost::RateCard;

/// Meta's `message_status` for a message held back for a quality check.
const HELD: &str = "held_for_quality_assessment";

#[derive(Debug, Clone)]
pub struct WhatsAppChannel {
    graph: GraphClient,
}

impl WhatsAppChannel {
    pub fn new(graph: GraphClient) -> Self {
        Self { graph }
    }
}

/// What a Cloud API answer means.
pub fn classify(result: SendResult) -> Answer {
    match result {
        SendResult::Accepted {
            wamid,
            message_status,
        } => Answer::Accepted {
            provider_id: wamid,
            held: message_status == HELD,
        },
        SendResult::Refused { code, message, .. } => Answer::Refused {
            code,
            message,
            action: classify_code(code),
        },
        SendResult::Transport { kind, detail } => Answer::Transport { kind, detail },
    }
}

#[async_trait]
impl Channel for WhatsAppChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::WhatsApp
    }

    fn endpoint(&self, sender: &SenderId) -> Endpoint {
        Endpoint(self.graph.messages_url(sender))
    }

    async fn send(&self, endpoint: &Endpoint, m: &Prepared<'_>) -> Answer {
        if let Some(session) = m.session {
            let body = SendSession::new(m.to.as_str(), m.key.as_str(), session);
            return classify(self.graph.send(&endpoint.0, &body).await);
        }
        let body = SendTemplate::new(
            m.to.as_str(),
            m.key.as_str(),
            m.template,
            m.language,
            m.components,
        );
        classify(self.graph.send(&endpoint.0, &body).await)
    }

    fn price_micros(
        &self,
        card: &RateCard,
        category: Category,
        to: &PhoneNumber,
        _text: &str,
    ) -> u64 {
        card.micros(category, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::classify::{Action, Transport};

    #[test]
    fn answers_keep_the_wamid_the_hold_and_the_code() {
        let accepted = classify(SendResult::Accepted {
            wamid: "wamid.A".into(),
            message_status: HELD.into(),
        });
        assert_eq!(
            accepted,
            Answer::Accepted {
                provider_id: "wamid.A".into(),
                held: true
            }
        );
        let plain = classify(SendResult::Accepted {
            wamid: "wamid.B".into(),
            message_status: "accepted".into(),
        });
        assert!(matches!(plain, Answer::Accepted { held: false, .. }));
        let refused = classify(SendResult::Refused {
            code: 131056,
            message: "pair".into(),
            http_status: 400,
        });
        assert_eq!(refused.code(), Some(131056));
        assert!(matches!(
            refused,
            Answer::Refused {
                action: Action::DelayRecipient,
                ..
            }
        ));
        assert_eq!(refused.describe(), "error 131056: pair");
        let cut = classify(SendResult::Transport {
            kind: Transport::MaybeSent,
            detail: "reset".into(),
        });
        assert_eq!(cut.describe(), "reset");
        assert_eq!(cut.code(), None);
    }
}
