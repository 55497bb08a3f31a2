//! UnregisterBroker (`kafka-cluster.sh unregister --id N`): forgets a decommissioned broker's
//! registration, as Kafka's `ReplicationControlManager.unregisterBroker` does: an id with no
//! registration is BROKER_ID_NOT_REGISTERED ("Broker ID N is not currently registered"). A
//! live broker is refused with INVALID_REQUEST where Kafka would unregister it and let it
//! register again (controller/src/placement.rs says why).

use kafka_protocol::messages::{UnregisterBrokerRequest, UnregisterBrokerResponse};
use kafka_protocol::protocol::StrBytes;
use skiff_controller::ControllerError;

use super::errors;
use crate::broker::Broker;

pub async fn handle(broker: &Broker, req: UnregisterBrokerRequest) -> UnregisterBrokerResponse {
    let id = req.broker_id.0;
    let checked = broker.metadata.read(|m| m.validate_unregister(id));
    let outcome = match checked {
        Err(r) => Err((errors::rejection(&r), r.to_string())),
        Ok(()) => broker.controller.unregister_broker(id).await.map_err(|e: ControllerError| match e.rejection() {
            Some(r) => (errors::rejection(r), r.to_string()),
            None => (errors::controller(&e), e.to_string()),
        }),
    };
    match outcome {
        Ok(()) => {
            tracing::info!(broker_id = id, "broker unregistered");
            UnregisterBrokerResponse::default().with_error_code(errors::NONE)
        }
        Err((code, message)) => UnregisterBrokerResponse::default()
            .with_error_code(code)
            .with_error_message(Some(StrBytes::from_string(message))),
    }
}
