//! Table administration: creating the table and its indexes, its time to live.

use super::*;

/// The schema item: one per table, outside every partition's keys.
const SCHEMA_ITEM_PK: &str = "#SCHEMA";
const SCHEMA_ITEM_SK: &str = "#";

impl DynamoDbManifest {
    /// Creates the table with the schema of the module doc (on-demand billing, the three
    /// indexes), waits until it and its indexes are active, and enables its time to live on
    /// [`RECORD_EXPIRY_ATTRIBUTE`] (harmless while no item carries it, and ready for
    /// `COMPACTOR_RECORD_TTL`). A table that already exists keeps its schema; its time to live
    /// is enabled if it is not, which a table made before record expiry existed needs. Last, it
    /// records [`SCHEMA_VERSION`] in the schema item (the migration from schema 1, whose items
    /// this build reads as they are), and fails if the table holds a newer one.
    pub async fn create_table(&self) -> Result<(), ManifestError> {
        let string_attribute = |name: &str| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build()
        };
        let key =
            |name: &str, key_type: KeyType| KeySchemaElement::builder().attribute_name(name).key_type(key_type).build();
        let index = |name: &str, hash: &str, range: &str, projection: Projection| -> Result<_, BuildError> {
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(hash, KeyType::Hash)?)
                .key_schema(key(range, KeyType::Range)?)
                .projection(projection)
                .build()
        };
        let build = || -> Result<_, BuildError> {
            Ok(self
                .client
                .create_table()
                .table_name(&self.table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(string_attribute("pk")?)
                .attribute_definitions(string_attribute("sk")?)
                .attribute_definitions(string_attribute("gsi1pk")?)
                .attribute_definitions(string_attribute("gsi1sk")?)
                .attribute_definitions(string_attribute("gsi2pk")?)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name("gsi2sk")
                        .attribute_type(ScalarAttributeType::N)
                        .build()?,
                )
                .attribute_definitions(string_attribute("gsi3pk")?)
                .attribute_definitions(string_attribute("gsi3sk")?)
                .key_schema(key("pk", KeyType::Hash)?)
                .key_schema(key("sk", KeyType::Range)?)
                // The lease attributes are projected so the lease filter runs on the index;
                // other partition updates then never touch the index.
                .global_secondary_indexes(index(
                    PENDING_INDEX,
                    "gsi1pk",
                    "gsi1sk",
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .non_key_attributes("lock_owner")
                        .non_key_attributes("lease_expires_at")
                        .build(),
                )?)
                // All attributes: `output_sources` answers from the index without a read per
                // source.
                .global_secondary_indexes(index(
                    SOURCES_INDEX,
                    "gsi2pk",
                    "gsi2sk",
                    Projection::builder().projection_type(ProjectionType::All).build(),
                )?)
                // Keys only: the index is written when a partition is created, never after.
                .global_secondary_indexes(index(
                    PARTITIONS_INDEX,
                    "gsi3pk",
                    "gsi3sk",
                    Projection::builder().projection_type(ProjectionType::KeysOnly).build(),
                )?))
        };
        let request = build().map_err(DynamoDbManifestError::Build)?;
        match request.send().await.map_err(aws_sdk_dynamodb::Error::from) {
            Ok(_) | Err(aws_sdk_dynamodb::Error::ResourceInUseException(_)) => {}
            Err(error) => return Err(self.request_error("CreateTable", error)),
        }
        self.wait_until_active().await?;
        self.enable_record_expiry().await?;
        self.record_schema_version().await
    }

    /// Writes [`SCHEMA_VERSION`] to the schema item, unless the table holds a newer one (then
    /// fails, saying to upgrade): `init` on a table of an older schema is its migration, which
    /// for schema 1 to 2 is the marker alone (the new items are additive).
    async fn record_schema_version(&self) -> Result<(), ManifestError> {
        self.check_schema().await?;
        let mut item = key_of(SCHEMA_ITEM_PK.to_owned(), SCHEMA_ITEM_SK);
        item.insert("version".to_owned(), number_value(SCHEMA_VERSION));
        let written = self
            .conditional_put(
                item,
                "attribute_not_exists(#pk) OR #version <= :version",
                values([(":version", number_value(SCHEMA_VERSION))]),
            )
            .await?;
        if written {
            Ok(())
        } else {
            // A newer build wrote its version between the check and the write.
            self.check_schema().await
        }
    }

    /// The table's schema version: 1 when it has no schema item (written before the item
    /// existed).
    pub async fn schema_version(&self) -> Result<u64, ManifestError> {
        match self.get_item(key_of(SCHEMA_ITEM_PK.to_owned(), SCHEMA_ITEM_SK)).await? {
            None => Ok(1),
            Some(item) => ItemReader::new(&item, &self.table).number("version"),
        }
    }

    /// Fails when the table holds a newer schema than this build reads.
    pub async fn check_schema(&self) -> Result<(), ManifestError> {
        let found = self.schema_version().await?;
        if found > SCHEMA_VERSION {
            return Err(DynamoDbManifestError::NewerSchema { table: self.table.clone(), found }.into());
        }
        Ok(())
    }

    /// [`Self::check_schema`] once per manifest value (and its clones): the seal calls this
    /// before its first lock, so a seal never writes into a table it cannot read. A table of an
    /// older schema gets this build's recorded first, so that an older build's seal refuses
    /// the table instead of misreading what this one writes (see [`SCHEMA_VERSION`]).
    pub(super) async fn check_schema_once(&self) -> Result<(), ManifestError> {
        self.schema_checked
            .get_or_try_init(|| async {
                let found = self.schema_version().await?;
                if found < SCHEMA_VERSION {
                    return self.record_schema_version().await;
                }
                if found > SCHEMA_VERSION {
                    return Err(DynamoDbManifestError::NewerSchema { table: self.table.clone(), found }.into());
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Turns the table's time to live on for [`RECORD_EXPIRY_ATTRIBUTE`], unless it already is.
    pub(super) async fn enable_record_expiry(&self) -> Result<(), ManifestError> {
        use aws_sdk_dynamodb::types::{TimeToLiveSpecification, TimeToLiveStatus};
        let described = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|error| self.request_error("DescribeTimeToLive", error.into()))?;
        let description = described.time_to_live_description();
        let status = description.and_then(|description| description.time_to_live_status());
        let attribute = description.and_then(|description| description.attribute_name());
        match (status, attribute) {
            (Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling), Some(RECORD_EXPIRY_ATTRIBUTE)) => Ok(()),
            (Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling), Some(other)) => {
                Err(DynamoDbManifestError::ForeignTimeToLive { table: self.table.clone(), attribute: other.to_owned() }
                    .into())
            }
            _ => {
                let specification = TimeToLiveSpecification::builder()
                    .attribute_name(RECORD_EXPIRY_ATTRIBUTE)
                    .enabled(true)
                    .build()
                    .map_err(DynamoDbManifestError::Build)?;
                self.client
                    .update_time_to_live()
                    .table_name(&self.table)
                    .time_to_live_specification(specification)
                    .send()
                    .await
                    .map_err(|error| self.request_error("UpdateTimeToLive", error.into()))?;
                Ok(())
            }
        }
    }

    pub(super) async fn wait_until_active(&self) -> Result<(), ManifestError> {
        let started = tokio::time::Instant::now();
        loop {
            let description = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|error| self.request_error("DescribeTable", error.into()))?;
            let table = description.table();
            let table_active = table.and_then(|table| table.table_status()) == Some(&TableStatus::Active);
            let indexes_active =
                table.map(|table| table.global_secondary_indexes()).unwrap_or_default().iter().all(|index| {
                    index.index_status().is_none_or(|status| *status == aws_sdk_dynamodb::types::IndexStatus::Active)
                });
            if table_active && indexes_active {
                return Ok(());
            }
            if started.elapsed() > TABLE_ACTIVE_TIMEOUT {
                return Err(DynamoDbManifestError::NotActive {
                    table: self.table.clone(),
                    timeout: TABLE_ACTIVE_TIMEOUT,
                }
                .into());
            }
            tokio::time::sleep(StdDuration::from_millis(250)).await;
        }
    }
}
