"""Everything facelens keeps: the tables, the database and its migrations, the crypto that
seals biometric data, and the hash-chained audit log. `database.Store` opens one data
directory's database and master key for everything above it."""
