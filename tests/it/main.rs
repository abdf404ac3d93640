mod amqp;
mod deploy;
mod engine;
mod rabbit_node;
mod serve;
mod simulator;
mod store_conformance;
mod support;
