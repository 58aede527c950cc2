//! Table administration: creating the table and its indexes, its time to live.

use super::*;

impl DynamoDbManifest {
    /// Creates the table with the schema of the module doc (on-demand billing, the three
    /// indexes), waits until it and its indexes are active, and enables its time to live on
    /// [`RECORD_EXPIRY_ATTRIBUTE`] (harmless while no item carries it, and ready for
    /// `COMPACTOR_RECORD_TTL`). A table that already exists keeps its schema; its time to live
    /// is enabled if it is not, which a table made before record expiry existed needs.
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
        self.enable_record_expiry().await
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
