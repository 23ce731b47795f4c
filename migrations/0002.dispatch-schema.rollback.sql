DROP TABLE deliveries;
DROP TABLE commands;
