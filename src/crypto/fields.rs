//! Every encrypted column, in one list: what key rotation rewraps and what
//! `carewire keys status` counts. A test compares it with the database, so a new
//! `*_enc` column cannot be forgotten.

/// A table with sealed fields.
#[derive(Debug, Clone, Copy)]
pub struct EncryptedTable {
    pub table: &'static str,
    /// The uuid column that is the row id in each field's associated data.
    pub id_column: &'static str,
    /// Columns holding sealed fields; the associated data names each without `_enc`.
    pub columns: &'static [&'static str],
}

impl EncryptedTable {
    /// The logical field name bound into the associated data.
    pub fn field_name(column: &'static str) -> &'static str {
        column.strip_suffix("_enc").unwrap_or(column)
    }
}

pub const ENCRYPTED: &[EncryptedTable] = &[
    EncryptedTable {
        table: "accounts",
        id_column: "id",
        columns: &["email_enc"],
    },
    EncryptedTable {
        table: "patients",
        id_column: "id",
        columns: &[
            "legal_given_name_enc",
            "legal_family_name_enc",
            "preferred_name_enc",
            "birth_date_enc",
            "sex_enc",
            "gender_identity_enc",
            "phone_enc",
            "email_enc",
            "address_enc",
            "mrn_enc",
            "insurance_id_enc",
            "emergency_contact_enc",
        ],
    },
    EncryptedTable {
        table: "clinical_note_versions",
        id_column: "id",
        columns: &["subjective_enc", "objective_enc", "assessment_enc", "plan_enc"],
    },
    EncryptedTable {
        table: "break_glass_grants",
        id_column: "id",
        columns: &["reason_enc"],
    },
    EncryptedTable {
        table: "appointments",
        id_column: "id",
        columns: &["reason_enc", "cancellation_reason_enc"],
    },
    EncryptedTable {
        table: "idempotency_keys",
        id_column: "id",
        columns: &["response_enc"],
    },
];
