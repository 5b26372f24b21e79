"""Party sections: Parties, sections and their lifecycle, accounts, cooperative approaches, entities, NDC periods."""
