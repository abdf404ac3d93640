//! Which role may do what: every admin action herald knows, its name in the audit log and the
//! `action` label of `herald_admin_requests_total`, and the roles allowed to perform it over
//! the API. One table, read by the admin API before each call and by the README.

use crate::domain::Role;

/// An admin action. Those with roles are API routes; the rest are the command line's (which
/// acts with the database's own credentials and is audited as `cli@<host>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `GET /api/campaigns/{id}`: state and counts per outcome.
    CampaignRead,
    /// `GET /api/campaigns/{id}/report`: per-recipient outcomes, numbers masked.
    CampaignReport,
    /// `GET /api/campaigns/{id}/costs`: funnel per channel, estimated and billed cost.
    CampaignCosts,
    CampaignPause,
    CampaignResume,
    CampaignCancel,
    CampaignBudget,
    /// `POST /api/conversions` and `herald conversions import`.
    ConversionsIngest,
    /// GDPR Art. 15: everything held on a number.
    ContactExport,
    /// GDPR Art. 17.
    ContactErase,
    /// `GET /api/audit` and `herald audit`.
    AuditRead,
    /// `herald tokens create` (command line only).
    TokensCreate,
    /// `herald tokens revoke` (command line only).
    TokensRevoke,
    /// `herald purge` (command line only; the workers' hourly purge is not an admin action).
    Purge,
}

impl Action {
    /// The audit log's `action` and the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CampaignRead => "campaign.read",
            Self::CampaignReport => "campaign.report",
            Self::CampaignCosts => "campaign.costs",
            Self::CampaignPause => "campaign.pause",
            Self::CampaignResume => "campaign.resume",
            Self::CampaignCancel => "campaign.cancel",
            Self::CampaignBudget => "campaign.budget",
            Self::ConversionsIngest => "conversions.ingest",
            Self::ContactExport => "contact.export",
            Self::ContactErase => "contact.erase",
            Self::AuditRead => "audit.read",
            Self::TokensCreate => "tokens.create",
            Self::TokensRevoke => "tokens.revoke",
            Self::Purge => "purge",
        }
    }

    /// The roles that may perform it over the API (none: command line only). Reads of a
    /// campaign go to the operator too: who pauses a campaign must see what it is doing.
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Self::CampaignRead | Self::CampaignReport | Self::CampaignCosts => &[Operator, Analyst],
            Self::CampaignPause
            | Self::CampaignResume
            | Self::CampaignCancel
            | Self::CampaignBudget => &[Operator],
            Self::ConversionsIngest => &[Operator, Ingest],
            Self::ContactExport | Self::ContactErase | Self::AuditRead => &[Privacy],
            Self::TokensCreate | Self::TokensRevoke | Self::Purge => &[],
        }
    }

    /// Whether `role` may perform it over the API.
    pub fn allows(self, role: Role) -> bool {
        self.roles().contains(&role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_data_is_for_the_privacy_role_alone() {
        for action in [
            Action::ContactExport,
            Action::ContactErase,
            Action::AuditRead,
        ] {
            for role in Role::ALL {
                assert_eq!(
                    action.allows(role),
                    role == Role::Privacy,
                    "{action:?} {role}"
                );
            }
        }
    }

    #[test]
    fn analysts_read_and_change_nothing() {
        for action in [
            Action::CampaignPause,
            Action::CampaignResume,
            Action::CampaignCancel,
            Action::CampaignBudget,
            Action::ConversionsIngest,
        ] {
            assert!(!action.allows(Role::Analyst), "{action:?}");
        }
        assert!(Action::CampaignCosts.allows(Role::Analyst));
    }

    #[test]
    fn ingest_only_reports_conversions() {
        let allowed: Vec<Action> = [
            Action::CampaignRead,
            Action::CampaignReport,
            Action::CampaignCosts,
            Action::CampaignPause,
            Action::CampaignBudget,
            Action::ConversionsIngest,
            Action::ContactExport,
            Action::AuditRead,
        ]
        .into_iter()
        .filter(|a| a.allows(Role::Ingest))
        .collect();
        assert_eq!(allowed, [Action::ConversionsIngest]);
    }

    #[test]
    fn token_management_and_purges_are_not_api_actions() {
        for role in Role::ALL {
            assert!(!Action::TokensCreate.allows(role));
            assert!(!Action::Purge.allows(role));
        }
    }
}
