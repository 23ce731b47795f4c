"""Events out (docs/api.md): webhook endpoints, and the sender that delivers what the
outbox holds (deliveries made by the changes' own transactions: migrations/0020), signed
as Standard Webhooks; and the presence sweep that notices agents going offline and
coming back."""
