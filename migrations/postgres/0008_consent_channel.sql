-- Consent and opt-outs per channel (issue 9; sms.md §6: UWG §7(2), ePrivacy Art. 13). A
-- WhatsApp opt-in is not consent to SMS, and vice versa, so a grant names its channel and the
-- latest grant is kept per (phone, category, channel).
--
-- Existing grants were all given for WhatsApp (the only channel so far): they become
-- 'whatsapp', which the column's default does.
ALTER TABLE consents ADD COLUMN channel TEXT NOT NULL DEFAULT 'whatsapp';
ALTER TABLE consents DROP CONSTRAINT consents_pkey;
ALTER TABLE consents ADD PRIMARY KEY (phone, category, channel);

-- A revocation names its channel, or NULL for every channel (like category NULL = every
-- category). Existing revocations stay NULL on purpose: they came from WhatsApp opt-outs and
-- from `herald consent revoke`, and an opt-out recorded before channels existed cannot be
-- shown to have meant WhatsApp only. Kept for every channel, it sends no SMS to someone who
-- said stop; the cost is that an SMS consent dated before such an opt-out (a late import) does
-- not count, and the person must give it anew — the safe side of the law.
ALTER TABLE revocations ADD COLUMN channel TEXT;

-- Suppressions stay without a channel: they hold for every channel.
