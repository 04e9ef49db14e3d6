//! The table behind the cache as the catalog describes it, and the statements built for it.
//!
//! The column types are read from `pg_attribute`, not configured, so that a flag cannot
//! disagree with the table: keys are `text`/`varchar` (UTF-8) or `bytea`, values `bytea`,
//! `text` or `jsonb` (both read and written as UTF-8 text), the expiry `timestamptz`. The
//! key column must be unique (a primary key or a unique index), because writes are
//! `INSERT … ON CONFLICT (key) DO UPDATE`.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::{BackendError, Row};
use crate::base::time::Timestamp;

/// How a column's values map onto the cache's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `bytea`: the bytes as they are.
    Bytes,
    /// `text`, `varchar`: UTF-8 without NUL.
    Text,
    /// `jsonb`: a JSON document, as UTF-8 text.
    Json,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Bytes => "bytea",
            Kind::Text => "text",
            Kind::Json => "jsonb",
        })
    }
}

/// The table and its statements.
#[derive(Debug)]
pub(super) struct Table {
    /// The table's name as PostgreSQL prints it (quoted where needed).
    name: String,
    key: Kind,
    key_column: String,
    value: Kind,
    value_column: String,
    has_expiry: bool,
    select: String,
    upsert: String,
    delete: String,
}

/// A PostgreSQL identifier, quoted.
fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl Table {
    /// Reads the table's columns from the catalog and builds its statements.
    ///
    /// # Errors
    /// [`BackendError::Table`] naming what is missing or of the wrong type;
    /// [`BackendError::Unavailable`] when the catalog cannot be read.
    pub(super) async fn describe(
        client: &impl GenericClient,
        table: &str,
        key_column: &str,
        value_column: &str,
        expiry_column: Option<&str>,
    ) -> Result<Table, BackendError> {
        let found = client
            .query_opt(
                "SELECT to_regclass($1)::oid, to_regclass($1)::text",
                &[&table],
            )
            .await?;
        let Some((oid, name)) = found.and_then(|row| {
            let oid: Option<u32> = row.get(0);
            let name: Option<String> = row.get(1);
            oid.zip(name)
        }) else {
            return Err(BackendError::Table(format!(
                "there is no table {table} (--backend-table; create it, or name it with its \
                 schema)"
            )));
        };
        let type_of = async |column: &str| -> Result<String, BackendError> {
            let row = client
                .query_opt(
                    "SELECT format_type(atttypid, NULL) FROM pg_attribute \
                     WHERE attrelid = $1 AND attname = $2 AND attnum > 0 AND NOT attisdropped",
                    &[&oid, &column],
                )
                .await?;
            row.map(|row| row.get::<_, String>(0)).ok_or_else(|| {
                BackendError::Table(format!("the table {name} has no column {column}"))
            })
        };
        let key = match type_of(key_column).await?.as_str() {
            "text" | "character varying" => Kind::Text,
            "bytea" => Kind::Bytes,
            other => {
                return Err(BackendError::Table(format!(
                    "the key column {key_column} is {other}; it must be text, varchar or bytea"
                )));
            }
        };
        let value = match type_of(value_column).await?.as_str() {
            "text" | "character varying" => Kind::Text,
            "bytea" => Kind::Bytes,
            "jsonb" => Kind::Json,
            other => {
                return Err(BackendError::Table(format!(
                    "the value column {value_column} is {other}; it must be bytea, text or jsonb"
                )));
            }
        };
        if let Some(expiry) = expiry_column {
            let kind = type_of(expiry).await?;
            if kind != "timestamp with time zone" {
                return Err(BackendError::Table(format!(
                    "the expiry column {expiry} is {kind}; it must be timestamptz"
                )));
            }
        }
        let unique: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
                 ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                 WHERE i.indrelid = $1 AND i.indisunique AND i.indnkeyatts = 1 \
                 AND i.indpred IS NULL AND a.attname = $2)",
                &[&oid, &key_column],
            )
            .await?
            .get(0);
        if !unique {
            return Err(BackendError::Table(format!(
                "the key column {key_column} of {name} is not unique; writes need a primary \
                 key or a unique index on it"
            )));
        }
        Ok(Table::new(
            name,
            (key, key_column),
            (value, value_column),
            expiry_column,
        ))
    }

    /// The statements for a table whose columns are known.
    fn new(
        name: String,
        (key, key_column): (Kind, &str),
        (value, value_column): (Kind, &str),
        expiry_column: Option<&str>,
    ) -> Table {
        let k = quote(key_column);
        let v = quote(value_column);
        let key_array = if key == Kind::Bytes {
            "bytea[]"
        } else {
            "text[]"
        };
        let value_array = if value == Kind::Bytes {
            "bytea[]"
        } else {
            "text[]"
        };
        // jsonb is read and written as text: the cache holds the document's bytes.
        let read_value = if value == Kind::Json {
            format!("{v}::text")
        } else {
            v.clone()
        };
        let write_value = if value == Kind::Json { "v::jsonb" } else { "v" };
        let (select, upsert) = match expiry_column {
            Some(expiry) => {
                let e = quote(expiry);
                (
                    format!(
                        "SELECT {k}, {read_value}, {e} FROM {name} WHERE {k} = ANY($1::{key_array})"
                    ),
                    format!(
                        "INSERT INTO {name} ({k}, {v}, {e}) SELECT k, {write_value}, e FROM \
                         unnest($1::{key_array}, $2::{value_array}, $3::timestamptz[]) AS u(k, v, e) \
                         ON CONFLICT ({k}) DO UPDATE SET {v} = EXCLUDED.{v}, {e} = EXCLUDED.{e}"
                    ),
                )
            }
            None => (
                format!("SELECT {k}, {read_value} FROM {name} WHERE {k} = ANY($1::{key_array})"),
                format!(
                    "INSERT INTO {name} ({k}, {v}) SELECT k, {write_value} FROM \
                     unnest($1::{key_array}, $2::{value_array}) AS u(k, v) \
                     ON CONFLICT ({k}) DO UPDATE SET {v} = EXCLUDED.{v}"
                ),
            ),
        };
        let delete = format!("DELETE FROM {name} WHERE {k} = ANY($1::{key_array})");
        Table {
            name,
            key,
            key_column: key_column.to_string(),
            value,
            value_column: value_column.to_string(),
            has_expiry: expiry_column.is_some(),
            select,
            upsert,
            delete,
        }
    }

    /// The table's name as PostgreSQL prints it.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The key column's kind.
    pub(super) fn key_kind(&self) -> Kind {
        self.key
    }

    /// The key column's name.
    pub(super) fn key_column(&self) -> &str {
        &self.key_column
    }

    /// The value column's kind.
    pub(super) fn value_kind(&self) -> Kind {
        self.value
    }

    /// Whether rows carry an expiry.
    pub(super) fn has_expiry(&self) -> bool {
        self.has_expiry
    }

    /// Checks that `key` (and `value`, for a write) fit their columns.
    ///
    /// # Errors
    /// [`BackendError::Value`] naming the column and what is wrong.
    pub(super) fn check(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), BackendError> {
        text_problem(self.key, key).map_or(Ok(()), |problem| {
            Err(BackendError::Value {
                column: self.key_column.clone(),
                kind: self.key.to_string(),
                problem: format!("the key {problem}"),
            })
        })?;
        let Some(value) = value else {
            return Ok(());
        };
        let problem = match self.value {
            Kind::Bytes => None,
            Kind::Text => text_problem(Kind::Text, value),
            Kind::Json => text_problem(Kind::Text, value).or_else(|| {
                serde_json::from_slice::<serde::de::IgnoredAny>(value)
                    .err()
                    .map(|error| format!("is not a JSON document ({error})"))
            }),
        };
        problem.map_or(Ok(()), |problem| {
            Err(BackendError::Value {
                column: self.value_column.clone(),
                kind: self.value.to_string(),
                problem: format!("the value {problem}"),
            })
        })
    }

    /// The rows of `keys`, one result per key in order.
    pub(super) async fn select(
        &self,
        client: &impl GenericClient,
        keys: &[Bytes],
    ) -> Result<Vec<Option<Row>>, BackendError> {
        let statement = client.prepare_cached(&self.select).await?;
        let rows = match self.key {
            Kind::Bytes => {
                let keys: Vec<&[u8]> = keys.iter().map(|key| &key[..]).collect();
                client.query(&statement, &[&keys]).await?
            }
            _ => {
                // A key that is not text cannot be in a text column.
                let keys: Vec<&str> = keys
                    .iter()
                    .filter_map(|key| std::str::from_utf8(key).ok())
                    .collect();
                client.query(&statement, &[&keys]).await?
            }
        };
        let changed = |error: tokio_postgres::Error| {
            BackendError::Table(format!(
                "the table's columns changed since the node read them ({error}); restart the \
                 node to read them again"
            ))
        };
        let mut found = hashbrown::HashMap::with_capacity(rows.len());
        for row in rows {
            let key = match self.key {
                Kind::Bytes => Bytes::from(row.try_get::<_, Vec<u8>>(0).map_err(changed)?),
                _ => Bytes::from(row.try_get::<_, String>(0).map_err(changed)?),
            };
            let value = match self.value {
                Kind::Bytes => row
                    .try_get::<_, Option<Vec<u8>>>(1)
                    .map_err(changed)?
                    .map(Bytes::from),
                _ => row
                    .try_get::<_, Option<String>>(1)
                    .map_err(changed)?
                    .map(Bytes::from),
            };
            let expires_at = if self.has_expiry {
                row.try_get::<_, Option<DateTime<Utc>>>(2)
                    .map_err(changed)?
                    .map(Timestamp::from_datetime)
            } else {
                None
            };
            // A row whose value is NULL is no entry.
            if let Some(value) = value {
                found.insert(key, Row { value, expires_at });
            }
        }
        Ok(keys.iter().map(|key| found.remove(key)).collect())
    }

    /// Inserts or updates `rows` in one statement; a key given twice keeps its last row (a
    /// statement may not update a row twice).
    pub(super) async fn upsert(
        &self,
        client: &impl GenericClient,
        rows: &[(Bytes, Row)],
    ) -> Result<(), BackendError> {
        let mut last = hashbrown::HashMap::with_capacity(rows.len());
        for (i, (key, row)) in rows.iter().enumerate() {
            self.check(key, Some(&row.value))?;
            last.insert(key.clone(), i);
        }
        let rows: Vec<&(Bytes, Row)> = rows
            .iter()
            .enumerate()
            .filter(|(i, (key, _))| last.get(key) == Some(i))
            .map(|(_, row)| row)
            .collect();
        let statement = client.prepare_cached(&self.upsert).await?;
        let expiries: Vec<Option<DateTime<Utc>>> = rows
            .iter()
            .map(|(_, row)| row.expires_at.and_then(Timestamp::to_datetime))
            .collect();
        let keys_bytes: Vec<&[u8]>;
        let keys_text: Vec<&str>;
        let keys: &(dyn ToSql + Sync) = match self.key {
            Kind::Bytes => {
                keys_bytes = rows.iter().map(|(key, _)| &key[..]).collect();
                &keys_bytes
            }
            _ => {
                keys_text = rows.iter().map(|(key, _)| utf8(key)).collect();
                &keys_text
            }
        };
        let values_bytes: Vec<&[u8]>;
        let values_text: Vec<&str>;
        let values: &(dyn ToSql + Sync) = match self.value {
            Kind::Bytes => {
                values_bytes = rows.iter().map(|(_, row)| &row.value[..]).collect();
                &values_bytes
            }
            _ => {
                values_text = rows.iter().map(|(_, row)| utf8(&row.value)).collect();
                &values_text
            }
        };
        if self.has_expiry {
            client
                .execute(&statement, &[keys, values, &expiries])
                .await?;
        } else {
            client.execute(&statement, &[keys, values]).await?;
        }
        Ok(())
    }

    /// Deletes the rows of `keys` in one statement.
    pub(super) async fn delete(
        &self,
        client: &impl GenericClient,
        keys: &[Bytes],
    ) -> Result<(), BackendError> {
        let statement = client.prepare_cached(&self.delete).await?;
        match self.key {
            Kind::Bytes => {
                let keys: Vec<&[u8]> = keys.iter().map(|key| &key[..]).collect();
                client.execute(&statement, &[&keys]).await?;
            }
            _ => {
                let keys: Vec<&str> = keys
                    .iter()
                    .filter_map(|key| std::str::from_utf8(key).ok())
                    .collect();
                client.execute(&statement, &[&keys]).await?;
            }
        }
        Ok(())
    }
}

/// Text checked by [`Table::check`] before it is written: never fails there.
fn utf8(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// Why `bytes` cannot be a value of a text column of `kind`, if they cannot.
fn text_problem(kind: Kind, bytes: &[u8]) -> Option<String> {
    if kind == Kind::Bytes {
        return None;
    }
    match std::str::from_utf8(bytes) {
        Err(error) => Some(format!("is not UTF-8 text ({error})")),
        Ok(text) if text.contains('\0') => Some("contains a NUL byte".into()),
        Ok(_) => None,
    }
}

#[cfg(test)]
impl Table {
    /// A table of `key` keys and bytea values, for the listener's tests.
    pub(super) fn for_tests(key: Kind) -> Table {
        Table::new("t".into(), (key, "k"), (Kind::Bytes, "v"), None)
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn statements_quote_the_columns_and_cast_json_as_text() {
        let table = Table::new(
            "shop.items".into(),
            (Kind::Text, "id"),
            (Kind::Json, "doc"),
            Some("expires \"at\""),
        );
        assert_eq!(
            table.select,
            "SELECT \"id\", \"doc\"::text, \"expires \"\"at\"\"\" FROM shop.items WHERE \"id\" = ANY($1::text[])"
        );
        assert!(table.upsert.contains(
            "SELECT k, v::jsonb, e FROM unnest($1::text[], $2::text[], $3::timestamptz[])"
        ));
        assert!(table.upsert.ends_with("ON CONFLICT (\"id\") DO UPDATE SET \"doc\" = EXCLUDED.\"doc\", \"expires \"\"at\"\"\" = EXCLUDED.\"expires \"\"at\"\"\""));
        assert_eq!(
            table.delete,
            "DELETE FROM shop.items WHERE \"id\" = ANY($1::text[])"
        );
    }

    #[test]
    fn values_that_do_not_fit_the_column_are_refused_with_the_column_named() {
        let json = Table::new("t".into(), (Kind::Text, "k"), (Kind::Json, "v"), None);
        assert!(json.check(b"a", Some(br#"{"n": 1}"#)).is_ok());
        let refused = json.check(b"a", Some(b"{not json")).expect_err("refused");
        assert!(
            refused
                .to_string()
                .contains("column v is jsonb: the value is not a JSON document"),
            "{refused}"
        );
        assert!(
            json.check(&[0xff], None)
                .expect_err("refused")
                .to_string()
                .contains("column k is text: the key is not UTF-8")
        );
        let text = Table::new("t".into(), (Kind::Bytes, "k"), (Kind::Text, "v"), None);
        assert!(text.check(&[0xff], Some(b"ok")).is_ok());
        assert!(
            text.check(b"k", Some(b"a\0b"))
                .expect_err("refused")
                .to_string()
                .contains("NUL")
        );
        let bytes = Table::new("t".into(), (Kind::Bytes, "k"), (Kind::Bytes, "v"), None);
        assert!(bytes.check(&[0xff], Some(&[0, 0xff])).is_ok());
    }
}
