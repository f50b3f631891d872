-- What a client's access tokens may carry: space-separated scopes, "admin" implying all of them.
-- Every client made before scopes existed, and every tenant's first client, may do everything.
ALTER TABLE api_clients ADD COLUMN scope text NOT NULL DEFAULT 'admin';
-- The scopes of the access token that issued an initial access token: the client registered with
-- it gets no more than those, so a client cannot make a mightier one.
ALTER TABLE initial_access_tokens ADD COLUMN scope text NOT NULL DEFAULT 'admin';
